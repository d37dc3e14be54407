"""The one exception type the command line turns into a one-line message and a non-zero exit."""


class VgmError(Exception):
    """A problem with the user's input (data, options, run folder, checkpoint), not a bug in vgm."""
