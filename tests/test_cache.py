"""The decoded-image disk cache (vgm/data/cache.py): never stale after an edit that keeps size and mtime, a damaged
entry decoded again (with a note) rather than a traceback, unfinished builds of ended processes removed, and
nothing outside the cache's own entries ever deleted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vgm.data import load
from vgm.data import cache as cache_mod
from vgm.errors import VgmError


def write_folder(root, n=12, side=6, seed=0):
    """n random RGB BMP files (uncompressed: a rewrite with other pixels keeps the file size)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"{i:02d}.bmp")


def everything(s) -> torch.Tensor:
    """All examples of streamed or in-memory splits, as uint8 levels in a fixed order (train, val, test)."""
    return torch.round(torch.cat([s.train[:], s.val[:], s.test[:]]) * 255).to(torch.uint8)


def streamed(root, cache, **kw):
    return load(str(root), memory_limit=0, cache_dir=str(cache), **kw)


def entries(cache) -> list:
    return sorted(p for p in cache.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------------------------------------ stale entries

@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_an_edit_that_keeps_size_and_mtime_is_decoded_again(tmp_path, capsys, how):
    """catches: the key (path, size, mtime_ns) in file_fingerprints, which served the old pixels after a rewrite
    whose size is unchanged and whose mtime was set back (what cp -p, rsync -t and a restore from backup do)."""
    root, cache = tmp_path / "f", tmp_path / "cache"
    write_folder(root)
    before = everything(streamed(root, cache))
    target = root / "03.bmp"
    st = target.stat()
    new = np.full((6, 6, 3), 77, np.uint8)
    if how == "in place":
        Image.fromarray(new).save(target)                           # same inode, same size
    else:
        Image.fromarray(new).save(root / "tmp.bmp.part", "BMP")    # written aside, renamed over (rsync's way)
        os.replace(root / "tmp.bmp.part", target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    capsys.readouterr()
    again = everything(streamed(root, cache))
    assert "decoding 12 images" in capsys.readouterr().err
    assert torch.equal(again, everything(load(str(root))))         # the pixels on disk now, decoded in memory
    assert not torch.equal(again, before)
    assert len(entries(cache)) == 1                                 # the stale entry was replaced


def test_an_npz_edit_that_keeps_size_and_mtime_is_copied_again(tmp_path):
    """catches: the .npz cache key (name, size, mtime_ns) in arrays.py: same staleness as image folders."""
    rng = np.random.default_rng(1)
    path, cache = tmp_path / "x.npz", tmp_path / "cache"
    np.savez(path, x=rng.integers(0, 256, (20, 5, 5, 3), dtype=np.uint8))
    before = everything(streamed(path, cache))
    st = path.stat()
    np.savez(path, x=rng.integers(0, 256, (20, 5, 5, 3), dtype=np.uint8))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    again = everything(streamed(path, cache))
    assert torch.equal(again, everything(load(str(path)))) and not torch.equal(again, before)


def test_an_unchanged_folder_is_not_decoded_again(tmp_path, capsys):
    root, cache = tmp_path / "f", tmp_path / "cache"
    write_folder(root)
    streamed(root, cache)
    capsys.readouterr()
    streamed(root, cache)
    assert "decoding" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ damaged entries

def built(tmp_path, capsys):
    """(folder, cache, its one entry, the images decoded in memory) after a first streamed load."""
    root, cache = tmp_path / "f", tmp_path / "cache"
    write_folder(root)
    streamed(root, cache)
    capsys.readouterr()
    (entry,) = entries(cache)
    return root, cache, entry, everything(load(str(root)))


def reload_after_damage(root, cache, capsys, truth) -> str:
    """Loads again: the entry must be rebuilt (one note, then the decoding note) and give the right images."""
    s = streamed(root, cache)
    err = capsys.readouterr().err
    assert torch.equal(everything(s), truth)
    notes = [line for line in err.splitlines() if "damaged" in line]
    assert len(notes) == 1 and "decoding 12 images" in err, err
    (entry,) = entries(cache)
    streamed(root, cache)                                           # and the rebuilt entry is used from now on
    assert "decoding" not in capsys.readouterr().err
    return notes[0]


def test_a_truncated_images_npy_is_decoded_again(tmp_path, capsys):
    """catches: cached_images trusting any entry with a readable info.json; the truncated images.npy then failed in
    np.load(mmap_mode="r") with a ValueError traceback (mmap length is greater than file size)."""
    root, cache, entry, truth = built(tmp_path, capsys)
    npy = entry / "images.npy"
    os.truncate(npy, npy.stat().st_size - 50)
    assert "images.npy" in reload_after_damage(root, cache, capsys, truth)


def test_an_images_npy_with_a_bad_header_or_shape_is_decoded_again(tmp_path, capsys):
    root, cache, entry, truth = built(tmp_path, capsys)
    (entry / "images.npy").write_bytes(b"not a numpy file at all")
    reload_after_damage(root, cache, capsys, truth)
    (entry,) = entries(cache)
    np.save(entry / "images.npy", np.zeros((3, 3, 6, 6), np.uint8))    # a valid .npy of the wrong shape
    reload_after_damage(root, cache, capsys, truth)


@pytest.mark.parametrize("damage", ["{\"skipped\": [", "", "[1, 2]", "{\"skipped\": \"x\", \"messages\": []}"])
def test_a_corrupt_info_json_is_decoded_again(tmp_path, capsys, damage):
    """catches: a corrupt info.json read as 'no entry' while the entry folder stayed, so each rerun decoded
    everything and then failed to rename over it ("Directory not empty (free some space ...)")."""
    root, cache, entry, truth = built(tmp_path, capsys)
    (entry / "info.json").write_text(damage)
    assert "info.json" in reload_after_damage(root, cache, capsys, truth)


def test_a_missing_file_in_an_entry_is_decoded_again(tmp_path, capsys):
    root, cache, entry, truth = built(tmp_path, capsys)
    (entry / "images.npy").unlink()
    reload_after_damage(root, cache, capsys, truth)


def test_a_damaged_entry_holding_other_files_is_not_deleted(tmp_path, capsys):
    """Only what vgm writes (images.npy, info.json) is removed: an entry folder that also holds a file of someone
    else's is a one-line error, and that file stays."""
    root, cache, entry, truth = built(tmp_path, capsys)
    (entry / "info.json").write_text("{")
    (entry / "mine.txt").write_text("the user's")
    with pytest.raises(VgmError) as e:
        streamed(root, cache)
    assert "\n" not in str(e.value) and "vgm did not write" in str(e.value), e.value
    assert (entry / "mine.txt").read_text() == "the user's"


# ------------------------------------------------------------------------------------------------ unfinished builds

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def fake_partial(cache, pid: int, host: str | None = None, age_s: float = 0.0, key: str = "ab" * 16):
    """A folder as an unfinished build of process `pid` on this host (or `host`) leaves, last written age_s ago."""
    name = f".{key}.partial-{host or cache_mod.host_id()}-{pid}"
    partial = cache / name
    partial.mkdir(parents=True)
    (partial / "images.npy").write_bytes(b"\0" * 1000)
    then = time.time() - age_s
    for p in (partial / "images.npy", partial):
        os.utime(p, (then, then))
    return partial


def test_unfinished_builds_of_ended_processes_are_removed_and_live_ones_kept(tmp_path, capsys):
    """catches: `.partial-<pid>` folders of killed builds left forever (only a process's own partial was removed).
    A live process's partial stays (it is still being written), unless it has not been written for STALE_AFTER
    seconds (its pid reused by another process); another host's stays until then (its pids are not ours to test)."""
    root, cache = tmp_path / "f", tmp_path / "cache"
    write_folder(root)
    cache.mkdir()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = fake_partial(cache, dead_pid())
    live = fake_partial(cache, alive.pid, key="cd" * 16)
    reused = fake_partial(cache, alive.pid, age_s=cache_mod.STALE_AFTER + 60, key="ef" * 16)
    elsewhere = fake_partial(cache, dead_pid(), host="0badc0de", key="12" * 16)
    elsewhere_old = fake_partial(cache, dead_pid(), host="0badc0de", age_s=cache_mod.STALE_AFTER + 60,
                                 key="34" * 16)
    user = cache / ".abab.partial-1"                 # not a name vgm gives: never touched
    user.mkdir()
    try:
        s = streamed(root, cache)
    finally:
        alive.kill()
        alive.wait()
    err = capsys.readouterr().err
    assert torch.equal(everything(s), everything(load(str(root))))
    assert not dead.exists() and not reused.exists() and not elsewhere_old.exists()
    assert live.exists() and elsewhere.exists() and user.exists()
    (line,) = [line for line in err.splitlines() if "unfinished cache build" in line]
    assert "3 unfinished" in line


def test_a_killed_build_leaves_a_partial_that_the_next_run_removes(tmp_path, capsys):
    """The real thing: a build killed (SIGKILL) half way, then a new run in this process."""
    root, cache = tmp_path / "f", tmp_path / "cache"
    write_folder(root, n=200)
    script = ("import os, signal, sys\n"
              "from vgm.data import folder, load\n"
              "real = folder.try_decode\n"
              "def dying(rel, d):\n"
              "    if rel == '150.bmp': os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(rel, d)\n"
              "folder.try_decode = dying\n"
              f"load({str(root)!r}, memory_limit=0, cache_dir={str(cache)!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    partials = [p for p in cache.iterdir() if ".partial-" in p.name]
    assert len(partials) == 1 and (partials[0] / "images.npy").stat().st_size > 0
    streamed(root, cache)
    assert not partials[0].exists() and len(entries(cache)) == 1
    assert [p for p in cache.iterdir() if p.name.startswith(".")] == []


def test_nothing_outside_the_cache_entries_is_deleted(tmp_path, capsys):
    """A cache folder shared with the user's own files (even the data folder itself): after building, rebuilding
    a damaged entry, replacing an older one and removing partials, every file of theirs is still there."""
    root = tmp_path / "f"
    write_folder(root)
    cache = root                                                  # the worst case: the cache inside the data
    (root / "notes.txt").write_text("keep")
    (root / "sub").mkdir()
    (root / "sub" / "info.json").write_text("{}")
    (root / ".hidden-partial-1").mkdir()
    theirs = sorted(p for p in root.rglob("*"))
    truth = everything(load(str(root)))
    assert torch.equal(everything(streamed(root, cache)), truth)
    (entry,) = [p for p in root.iterdir() if p.is_dir() and len(p.name) == 32]
    (entry / "info.json").write_text("{")
    assert torch.equal(everything(streamed(root, cache)), truth)
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / "00.bmp")
    streamed(root, cache)
    mine = {p for p in root.rglob("*") if len(p.relative_to(root).parts[0]) == 32}
    assert sorted(set(root.rglob("*")) - mine) == theirs
