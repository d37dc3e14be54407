"""vgm explore: every number the server sends checked against the model called directly (or a closed form), bad
input answered with 4xx while the server keeps serving, no request path reaching the file system, 200 concurrent
requests all answered right, the command's errors and Ctrl-C, and the page itself in headless Chromium."""
from __future__ import annotations

import dataclasses
import http.client
import io
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence

import vgm
from conftest import BROWSER_FLAGS, CHROMEDRIVER, CHROMIUM, REPO, chromium_or_skip
from vgm.cli import main
from vgm.data.dequantize import eval_noise
from vgm.data.tokens import encode_known, to_text
from vgm.tools import explore as ex
from vgm.tools.explore import MAP_POINTS, MAX_BODY, centre_drawing, open_run, start


# ----- runs and servers ----------------------------------------------------------------------------------------

def train(*args: str) -> None:
    assert main(["train", *args, "--quiet"]) == 0


def write_run(run: Path, model, data: str) -> Path:
    """A run folder as `vgm train` writes it, for an untrained model (what the page shows needs no training)."""
    model.save(run)
    (run / "config.json").write_text(json.dumps({
        "vgm_version": vgm.__version__, "kind": model.kind,
        "data": {"data": data, "data_dir": None, "binarize": "none", "val_fraction": 0.1},
        "train": dataclasses.asdict(vgm.TrainConfig()),
        "model": json.loads(json.dumps(dataclasses.asdict(model.config)))}))
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("explore-runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # tiny MLPs: a second thread buys nothing on shared cores
    try:
        train("vae", "--epochs", "15", "--latent-dim", "4", "--hidden", "64,32", "--out", str(root / "vae"))
        train("realnvp", "--data", "digits", "--depth", "2", "--hidden", "32", "--epochs", "1",
              "--out", str(root / "flow"))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("VGM_DSPRITES_SIZE", "400")
            train("betavae", "--data", "dsprites32", "--latent-dim", "4", "--hidden", "32", "--epochs", "1",
                  "--batch-size", "64", "--out", str(root / "betavae"))
    finally:
        torch.set_num_threads(threads)
    return {"vae": root / "vae", "flow": root / "flow", "betavae": root / "betavae"}


class Served:
    """A run's Explorer behind a server on 127.0.0.1 at an ephemeral port, and plain HTTP requests to it."""

    def __init__(self, run: Path, **kwargs):
        self.explorer = open_run(run, **kwargs)
        self.server, self.thread = start(self.explorer, "127.0.0.1", 0)
        self.port = self.server.port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def request(self, path: str, method: str = "GET", body: bytes | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, path: str, method: str = "GET", body: bytes | None = None) -> dict:
        status, _, data = self.request(path, method, body)
        assert status == 200, (path, status, data[:300])
        return json.loads(data)

    def raw(self, request: bytes) -> bytes:
        """Bytes sent as they are (no client normalising the path), the whole answer back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(request)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out


@pytest.fixture(scope="module")
def vae(runs):
    s = Served(runs["vae"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def flow(runs):
    s = Served(runs["flow"])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def betavae(runs):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VGM_DSPRITES_SIZE", "400")
        s = Served(runs["betavae"])
    yield s
    s.stop()


def png_array(data: bytes) -> np.ndarray:
    """PNG bytes (or a data: URL) -> uint8 array (H, W) for grey images."""
    if isinstance(data, str):
        import base64
        data = base64.b64decode(data.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)))


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """What an image of values in [0, 1] is as 8-bit pixels (the reference the server's PNGs must equal)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def png_bytes(a: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode).save(buf, format="PNG")
    return buf.getvalue()


def zq(z) -> str:
    return ",".join(repr(float(v)) for v in z)


def test_test_data_stay_in_the_model_order(vae):
    """The map's examples and labels are the first test examples', in order (the page's index i is the split's
    index i), and so are the map's labels. Catches labels shifted against their points."""
    e = vae.explorer
    splits = vgm.run.run_data(vae.explorer.run_dir, None)[1]
    assert torch.equal(e.test, splits.test[:MAP_POINTS])
    assert vae.json("/api/map")["labels"] == splits.test_labels[:MAP_POINTS].tolist()
    assert vae.json("/api/point?i=4")["label"] == int(splits.test_labels[4])


# ----- numbers -----------------------------------------------------------------------------------------------

def test_info_sorts_dimensions_by_their_kl(vae):
    """KL per dimension = mean over the map's test examples of KL(q(z_j|x) ‖ N(0, 1)) (torch's own closed form),
    sliders in decreasing KL, inactive below 0.1 nats. Catches a wrong KL formula, an ascending or missing sort,
    and KLs attached to the wrong dimension."""
    info = vae.json("/api/info")
    e = vae.explorer
    with torch.no_grad():
        q = e.model.encode(e.test).base_dist
        kl = kl_divergence(q, Normal(0.0, 1.0)).mean(0).double()
    dims = [d["dim"] for d in info["dims"]]
    assert sorted(dims) == list(range(4)) and info["latent_dim"] == 4
    assert dims == torch.argsort(kl, descending=True).tolist()
    for d in info["dims"]:
        assert d["kl"] == pytest.approx(kl[d["dim"]].item(), rel=1e-5, abs=1e-7)
        assert d["active"] == (kl[d["dim"]].item() >= 0.1)
    assert info["family"] == "latent" and info["can_draw"] and info["shape"] == [1, 8, 8]
    assert info["map_methods"] == ["pca", "tsne"] and info["labels"] and info["map_size"] == len(e.test)


def test_decoded_image_is_the_models_mean(vae):
    """/api/decode gives the 8-bit image of the mean of p(x|z) for z in the model's dimension order. Catches a
    permuted or rescaled z and a wrong image layout; moving one active dimension changes the pixels."""
    e = vae.explorer
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.randn(4, generator=g) * 1.5
        status, headers, data = vae.request("/api/decode?z=" + zq(z))
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert "app;dur=" in headers["Server-Timing"]
        with torch.no_grad():
            want = as_uint8(e.model.decode(z[None]).mean[0, 0])
        got = png_array(data)
        assert got.shape == (8, 8) and np.abs(got.astype(int) - want.astype(int)).max() <= 1
    top = vae.json("/api/info")["dims"][0]["dim"]
    z0, z1 = torch.zeros(4), torch.zeros(4)
    z1[top] = 2.5
    a, b = (png_array(vae.request("/api/decode?z=" + zq(z))[2]) for z in (z0, z1))
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


def test_prior_sample_is_z0_scaled_by_the_temperature(vae):
    """z ~ p(z) at temperature T is T·z₀ for the standard normal prior; the seed it reports repeats the draw.
    Catches a temperature that is ignored or applied twice."""
    res = vae.json("/api/prior?t=0.5")
    torch.manual_seed(res["seed"])
    z0 = vae.explorer.model.prior.sample()
    assert torch.allclose(torch.tensor(res["z"]), 0.5 * z0, atol=1e-6)
    assert vae.json("/api/prior?t=0.5")["seed"] != res["seed"]          # each click a fresh draw


def test_map_is_the_pca_of_the_posterior_means_and_inverts(vae):
    """Map points = scikit-learn's PCA of the test means (up to each axis' sign); clicking a point gives its
    posterior mean; clicking a place gives scikit-learn's inverse_transform of it. Catches projecting the wrong
    matrix, forgetting to centre, and an inverse without the mean."""
    from sklearn.decomposition import PCA
    e = vae.explorer
    with torch.no_grad():
        mu = e.model.encode(e.test).mean.double().numpy()
    pca = PCA(2).fit(mu)
    want = pca.transform(mu)
    res = vae.json("/api/map")
    pts = np.array(res["points"])
    assert res["method"] == "pca" and res["invertible"] and pts.shape == (len(mu), 2)
    signs = np.sign((pts * want).sum(0))
    assert np.allclose(pts, want * signs, atol=1e-4)
    assert np.allclose(res["explained"], pca.explained_variance_ratio_, atol=1e-6)
    assert len(res["labels"]) == len(mu)
    for i in (0, 7):
        p = vae.json(f"/api/point?i={i}")
        assert np.allclose(p["z"], mu[i], atol=1e-5) and p["label"] == res["labels"][i]
    x, y = 0.3, -0.2
    z = np.array(vae.json(f"/api/unmap?x={x}&y={y}")["z"])
    assert np.allclose(z, pca.inverse_transform((np.array([[x, y]]) * signs))[0], atol=1e-5)


def test_tsne_map_keeps_the_neighbours_of_the_means(vae):
    """t-SNE of the test means: each point's neighbours there are its neighbours in latent space (scikit-learn's
    trustworthiness), so the points are the means', in their order. Catches embedding the wrong matrix or a
    shuffled order (trustworthiness ≈ 0.5)."""
    from sklearn.manifold import trustworthiness
    res = vae.json("/api/map?method=tsne")
    pts = np.array(res["points"])
    assert res["method"] == "tsne" and not res["invertible"] and pts.shape == (len(vae.explorer.test), 2)
    assert trustworthiness(vae.explorer.mu.numpy(), pts, n_neighbors=5) > 0.85


def test_interpolation_paths_images_and_elbo(vae):
    """Linear points (1 − t) a + t b, spherical points sin((1 − t)Ω)/sin Ω · a + sin(tΩ)/sin Ω · b, each
    decoded to the model's mean, each with ELBO = −(E_q[−log p(x|z)] + KL): the KL by torch's closed form, the
    reconstruction by 4000 independent draws, within 4 standard errors of the server's 32. Catches a wrong path,
    images of other z, a sign error, a missing KL, and a sum over the draws instead of a mean."""
    e = vae.explorer
    res = vae.json("/api/interpolate?i=3&j=11&steps=5")
    a, b = e.mu[3].double(), e.mu[11].double()
    t = torch.tensor(res["t"], dtype=torch.float64)
    assert torch.allclose(t, torch.linspace(0, 1, 5, dtype=torch.float64))
    lin = torch.tensor([p["z"] for p in res["linear"]], dtype=torch.float64)
    assert torch.allclose(lin, (1 - t)[:, None] * a + t[:, None] * b, atol=1e-6)
    sph = torch.tensor([p["z"] for p in res["spherical"]], dtype=torch.float64)
    omega = torch.arccos(a @ b / (a.norm() * b.norm()))
    coef = torch.linalg.lstsq(torch.stack([a, b], 1), sph.T).solution          # sph = α a + β b, in span(a, b)
    assert torch.allclose(torch.stack([a, b], 1) @ coef, sph.T, atol=1e-5)
    assert torch.allclose(coef[0], torch.sin((1 - t) * omega) / torch.sin(omega), atol=1e-5)
    assert torch.allclose(coef[1], torch.sin(t * omega) / torch.sin(omega), atol=1e-5)
    assert png_array(res["ends"][0]).tolist() == as_uint8(e.test[3, 0]).tolist()
    torch.manual_seed(123)
    for name in ("linear", "spherical"):
        for p in res[name][::2]:
            z = torch.tensor(p["z"], dtype=torch.float32)
            with torch.no_grad():
                x = e.model.decode(z[None]).mean
                assert np.abs(png_array(p["image"]).astype(int) - as_uint8(x[0, 0]).astype(int)).max() <= 1
                q = e.model.encode(x)
                kl = kl_divergence(q.base_dist, Normal(0.0, 1.0)).sum().item()
                zs = q.sample((4000,))[:, 0]
                recon = -e.model.decode(zs).log_prob(x.expand(4000, *x.shape[1:])).double()
            assert p["kl"] == pytest.approx(kl, rel=1e-4, abs=1e-5)
            tol = 4 * recon.std().item() / math.sqrt(ex.ELBO_SAMPLES) + 1e-3
            assert abs(p["recon"] - recon.mean().item()) < tol
            assert p["elbo"] == pytest.approx(-(p["recon"] + p["kl"]), abs=1e-9)


def test_upload_is_encoded_as_the_data_are(vae):
    """A test image uploaded as 8-bit PNG comes back to the data's 17 grey levels exactly, so q(z|x), the
    reconstruction and the KL are those of the test example; a training image's nearest training example is
    itself, at distance 0. Catches a missing re-quantization, a wrong μ/σ, a KL not in closed form, and nearest
    neighbours reported under the wrong index."""
    e = vae.explorer
    x = e.test[5]
    res = vae.json("/api/encode", "POST", png_bytes(as_uint8(x[0])))
    with torch.no_grad():
        q = e.model.encode(x[None])
        recon = e.model.decode(q.mean).mean[0, 0]
    assert np.allclose(res["mu"], q.mean[0].numpy(), atol=1e-6)
    assert np.allclose(res["sigma"], q.stddev[0].numpy(), atol=1e-6)
    kl = kl_divergence(q.base_dist, Normal(0.0, 1.0))[0].double()
    assert np.allclose(res["kl_per_dim"], kl.numpy(), rtol=1e-5, atol=1e-7)
    assert res["kl"] == pytest.approx(kl.sum().item(), rel=1e-5)
    assert png_array(res["input"]).tolist() == as_uint8(x[0]).tolist()
    assert np.abs(png_array(res["reconstruction"]).astype(int) - as_uint8(recon).astype(int)).max() <= 1
    k = 17
    res = vae.json("/api/encode", "POST", png_bytes(as_uint8(e.pool[k, 0])))
    near = res["nearest"]
    assert len(near) == ex.NEAREST_K and near[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    assert png_array(near[0]["image"]).tolist() == as_uint8(e.pool[k, 0]).tolist()
    assert [n["distance"] for n in near] == sorted(n["distance"] for n in near)
    d = (e.pool_mu - torch.tensor(res["mu"])).norm(dim=1)
    assert near[-1]["distance"] == pytest.approx(torch.sort(d).values[ex.NEAREST_K - 1].item(), rel=1e-4)


def stroke_png(size: int = 280, width: int = 24) -> bytes:
    """A drawn '1', off-centre in the top-left corner, white on black, RGBA as a canvas exports it."""
    from PIL import ImageDraw
    img = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    ImageDraw.Draw(img).line([(60, 30), (70, 150)], fill=(255, 255, 255, 255), width=width)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("side,box", [(28, 20), (8, 8)])
def test_drawing_is_scaled_and_centred_as_mnist(side, box):
    """MNIST's normalisation (LeCun et al., 1998): the longer side of the bounding box fills the 20-pixel box (the
    whole 8 for 8x8 digits), the centre of mass on the image's centre. Catches a drawing passed through unscaled
    or uncentred."""
    g = np.asarray(Image.open(io.BytesIO(stroke_png())).convert("L"), dtype=np.float64) / 255
    out = centre_drawing(g, side)
    assert out.shape == (side, side) and out.max() > 0.5
    rows, cols = np.nonzero(out > 0)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == box
    cy = (out.sum(1) * np.arange(side)).sum() / out.sum()
    cx = (out.sum(0) * np.arange(side)).sum() / out.sum()
    assert abs(cy - (side - 1) / 2) <= 0.5 + 1e-9 or side == box       # a full-height digit cannot move
    assert abs(cx - (side - 1) / 2) <= 0.5 + 1e-9


def test_drawn_image_is_encoded(vae):
    res = vae.json("/api/encode?drawn=1", "POST", stroke_png())
    x = png_array(res["input"])
    assert x.shape == (8, 8) and set(np.unique(x)) <= {round(k * 255 / 16) for k in range(17)}
    assert len(res["mu"]) == 4 and res["reconstruction"].startswith("data:image/png")


# ----- bad input ---------------------------------------------------------------------------------------------

def big_black_png(side: int) -> bytes:
    return png_bytes(np.zeros((side, side), np.uint8))


BAD = [
    ("GET", "/api/decode?z=0,0,0", None, 400, "4 comma-separated"),
    ("GET", "/api/decode?z=0,0,0,0,0", None, 400, "4 comma-separated"),
    ("GET", "/api/decode?z=0,nan,0,0", None, 400, "finite"),
    ("GET", "/api/decode?z=0,inf,0,0", None, 400, "finite"),
    ("GET", "/api/decode?z=0,-Infinity,0,0", None, 400, "finite"),
    ("GET", "/api/decode?z=0,1e300,0,0", None, 400, "within"),
    ("GET", "/api/decode?z=0,31,0,0", None, 400, "within"),
    ("GET", "/api/decode?z=a,b,c,d", None, 400, "numbers"),
    ("GET", "/api/decode?z=", None, 400, "4 comma-separated"),
    ("GET", "/api/decode", None, 400, "missing"),
    ("GET", "/api/decode?z=0,0,0,0&z=1,1,1,1", None, 400, "2 times"),
    ("GET", "/api/decode?z=0,0,0,0&zz=1", None, 400, "unknown parameter"),
    ("GET", "/api/prior?t=0", None, 400, "t must be"),
    ("GET", "/api/prior?t=-1", None, 400, "t must be"),
    ("GET", "/api/prior?t=nan", None, 400, "t must be"),
    ("GET", "/api/prior?t=6", None, 400, "t must be"),
    ("GET", "/api/interpolate?i=0&j=1&steps=1", None, 400, "steps"),
    ("GET", "/api/interpolate?i=0&j=1&steps=33", None, 400, "steps"),
    ("GET", "/api/interpolate?i=-1&j=1", None, 400, "index"),
    ("GET", "/api/interpolate?i=0&j=100000", None, 400, "index"),
    ("GET", "/api/interpolate?i=0.5&j=1", None, 400, "integer"),
    ("GET", "/api/point?i=99999999999", None, 400, "between"),
    ("GET", "/api/example.png?i=359", None, 400, "index"),
    ("GET", "/api/unmap?x=1e9&y=0", None, 400, "x must be"),
    ("GET", "/api/unmap?x=2000&y=0", None, 400, "beyond"),
    ("GET", "/api/map?method=umap", None, 400, "method"),
    ("GET", "/api/traversal?z=0,0,0,0", None, 404, "betavae"),
    ("GET", "/api/samples?n=4", None, 404, "flow"),
    ("GET", "/api/text/sample", None, 404, "sequence"),
    ("POST", "/api/encode", b"GIF89a not really", 400, "not an image"),
    ("POST", "/api/encode", b"hello, world", 400, "not an image"),
    ("POST", "/api/encode", b"", 400, "empty"),
    ("POST", "/api/encode", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "not an image"),
    ("POST", "/api/encode", b"\0" * (MAX_BODY + 1), 413, "at most"),
    ("POST", "/api/encode", big_black_png(10), 400, "10x10"),
    ("POST", "/api/encode?drawn=1", big_black_png(280), 400, "empty"),
    ("POST", "/api/encode?drawn=1", big_black_png(3000), 400, "at most 1024"),
    ("POST", "/api/encode?drawn=2", big_black_png(8), 400, "drawn"),
    ("GET", "/api/encode", None, 405, "POST"),
    ("POST", "/api/info", b"{}", 405, "GET"),
    ("PUT", "/api/info", b"", 405, "GET"),
    ("DELETE", "/", None, 404, "not found"),
    ("GET", "/api/nothing", None, 404, "not found"),
    ("GET", "/app.js?v=1", None, 400, "no parameters"),
]


def test_bad_requests_are_answered_4xx_and_the_server_keeps_serving(vae):
    """Each bad request gets its 4xx and a JSON message saying what is wrong; afterwards the server still answers.
    Catches any unchecked parameter (a NaN z decodes to a NaN image; n = 10**9 samples never returns)."""
    for method, path, body, status, words in BAD:
        got, headers, data = vae.request(path, method, body)
        assert got == status, (method, path, got, data[:200])
        msg = json.loads(data)["error"]
        assert words in msg and "\n" not in msg, (path, msg)
        assert headers["Content-Type"] == "application/json"
    png = png_bytes(as_uint8(vae.explorer.test[0, 0]))
    truncated = png[: len(png) // 2]
    got, _, data = vae.request("/api/encode", "POST", truncated)
    assert got == 400 and "image" in json.loads(data)["error"]
    assert vae.request("/api/info")[0] == 200


def test_foreign_host_chunked_uploads_and_unread_bodies(vae):
    """A page served from elsewhere that rebinds its name to 127.0.0.1 sends its own Host: refused (403). An
    upload without a Content-Length cannot be capped: refused (411). A body the server does not read (a POST to
    a GET endpoint) closes the connection, so that it is never taken for a second request."""
    status, _, data = vae.request("/api/info", headers={"Host": "evil.example:80"})
    assert status == 403
    answer = vae.raw(b"POST /api/encode HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n" % vae.port)
    assert answer.startswith(b"HTTP/1.1 411")
    smuggled = b"GET /api/decode?z=0,0,0,0 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % vae.port
    answer = vae.raw(b"POST /api/info HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
                     % (vae.port, len(smuggled)) + smuggled)
    assert answer.startswith(b"HTTP/1.1 405") and answer.count(b"HTTP/1.1 ") == 1 and b"PNG" not in answer
    assert vae.request("/api/info")[0] == 200


TRAVERSALS = ["/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
              "/%252e%252e%252f%252e%252e%252fetc%252fpasswd", "//etc/passwd", "/app.js/../../../../etc/passwd",
              "/..\\..\\..\\etc\\passwd", "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "/api/../../pyproject.toml",
              "/explore.py", "/explore_assets/app.js", "/vgm/tools/explore.py", "/app.js%00.png", "/style.css/",
              "/./app.js", "/api/info/../../../README.md", "/%2fetc%2fpasswd", "http://127.0.0.1/../pyproject.toml",
              "/../model.safetensors", "/../config.json"]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_request_path_reaches_the_file_system(vae, path):
    """Only exact paths are served (the three assets, read at start-up, and the API): ../ and its encodings, the
    package's own files and the run's files are all 404. Catches any path joined onto a folder."""
    head = b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % vae.port
    answer = vae.raw(b"GET " + path.encode() + head)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
    for secret in (b"root:", b"[build-system]", b"safetensors", b"\"kind\"", b"use strict", b"import "):
        assert secret not in answer


def test_the_page_and_its_assets_come_from_the_package(vae):
    """Exactly the packaged files, with a CSP that allows nothing from elsewhere (no CDN, no inline script)."""
    folder = REPO / "vgm" / "tools" / "explore_assets"
    for path, name in (("/", "index.html"), ("/app.js", "app.js"), ("/style.css", "style.css")):
        status, headers, data = vae.request(path)
        assert status == 200 and data == (folder / name).read_bytes()
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
    html = (folder / "index.html").read_text()
    for text in (html, (folder / "app.js").read_text(), (folder / "style.css").read_text()):
        assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text


def test_200_concurrent_requests_are_all_answered_right(vae):
    """200 requests at once, each for its own z: all answered 200, each with the image of its own z (one model
    behind one lock), and the server still up. Catches a race that hands one request another's image, and a
    backlog that refuses connections."""
    e = vae.explorer
    g = torch.Generator().manual_seed(7)
    zs = torch.randn(200, 4, generator=g) * 2
    answers: list = [None] * 200
    barrier = threading.Barrier(200)

    def ask(k: int) -> None:
        barrier.wait(timeout=60)
        try:
            answers[k] = vae.request("/api/decode?z=" + zq(zs[k]))
        except Exception as err:  # noqa: BLE001
            answers[k] = err

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    with torch.no_grad():
        want = as_uint8(e.model.decode(zs).mean[:, 0])
    for k, a in enumerate(answers):
        assert isinstance(a, tuple) and a[0] == 200, (k, a)
        assert np.abs(png_array(a[2]).astype(int) - want[k].astype(int)).max() <= 1, k
    assert vae.request("/api/info")[0] == 200


def test_png_of_grey_and_rgb_images():
    """8-bit pixels of (1, H, W) and (3, H, W) images: clipped to [0, 1], rounded, channels last for RGB."""
    x = torch.rand(3, 5, 7) * 1.2 - 0.1
    assert np.array_equal(png_array(ex.png(x)), as_uint8(x.permute(1, 2, 0)))
    assert np.array_equal(png_array(ex.png(x[:1])), as_uint8(x[0]))


# ----- other models --------------------------------------------------------------------------------------------

def test_flow_samples_at_the_temperature_and_bits_per_dim(flow):
    """Samples are model.sample(n, T) under the seed reported; an uploaded image's bits/dim is −log p(x)/(D ln 2)
    with vgm's fixed evaluation noise. Catches an ignored temperature or count, and bits/dim off by ln 2 or D."""
    e = flow.explorer
    info = flow.json("/api/info")
    assert info["family"] == "flow" and info["levels"] == 17 and info["can_draw"]
    res = flow.json("/api/samples?n=5&t=0.6")
    torch.manual_seed(res["seed"])
    with torch.no_grad():
        want = e.model.sample(5, temperature=0.6)
    assert len(res["images"]) == 5
    for got, w in zip(res["images"], want):
        assert png_array(got).tolist() == as_uint8(w[0]).tolist()
    x = vgm.run.run_data(e.run_dir, None)[1].test[2]
    res = flow.json("/api/encode", "POST", png_bytes(as_uint8(x[0])))
    with torch.no_grad():
        lp = e.model.log_prob(x[None], eval_noise(x[None])).item()
    assert res["log_px"] == pytest.approx(lp, rel=1e-5)
    assert res["bits_per_dim"] == pytest.approx(-lp / (64 * math.log(2)), rel=1e-5)
    for path, status in (("/api/samples?n=65", 400), ("/api/samples?n=0", 400), ("/api/samples?t=0", 400),
                         ("/api/samples?n=1000000000", 400), ("/api/decode?z=0", 404), ("/api/map", 404)):
        assert flow.request(path)[0] == status, path
    assert flow.request("/api/info")[0] == 200


def test_betavae_traversal_rows_and_factors(betavae):
    """Each row sweeps one dimension over linspace(−span, span) with the others at z, decoded; rows in slider
    order with their KL; on dSprites each dimension names the factor of largest normalised mutual information
    (the MIG matrix). Catches a row that moves the wrong dimension and a factor taken from the wrong axis."""
    from sklearn.metrics import mutual_info_score
    from vgm.metrics.mig import discretize
    e = betavae.explorer
    info = betavae.json("/api/info")
    assert info["traversal"] and info["label_names"] == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    z = torch.tensor([0.5, -1.0, 0.25, 1.5])
    res = betavae.json("/api/traversal?steps=3&span=2&z=" + zq(z))
    assert [r["dim"] for r in res["rows"]] == [d["dim"] for d in info["dims"]]
    for r in res["rows"]:
        j = r["dim"]
        zs = z.repeat(3, 1)
        zs[:, j] = torch.tensor([-2.0, 0.0, 2.0])
        with torch.no_grad():
            x = e.model.decode(zs).mean[:, 0]
        got = png_array(r["image"])
        assert got.shape == (32, 3 * 33 - 1)
        for k in range(3):
            assert np.abs(got[:, k * 33: k * 33 + 32].astype(int) - as_uint8(x[k]).astype(int)).max() <= 1
    factors = np.asarray(e.labels)
    codes = discretize(e.mu.double().numpy())
    for d in info["dims"]:
        nmi = [mutual_info_score(f, codes[:, d["dim"]]) / mutual_info_score(f, f) if len(set(f)) > 1 else -1
               for f in factors.T]
        assert d["factor"]["factor"] == info["label_names"][int(np.argmax(nmi))]
        assert d["factor"]["nmi"] == pytest.approx(max(nmi), rel=1e-6)


def test_factor_per_dim_normalises_by_the_factors_entropy():
    """A code that pins down shape (3 values, H = log 3) and part of pos_x (32 values, H = log 32) tracks shape
    best: MIG's matrix divides I(z_j; v_k) by H(v_k), while the raw mutual information is larger for pos_x. A code
    of noise alone tracks nothing; constant factors give no answer. Catches the raw MI used unnormalised."""
    from sklearn.metrics import mutual_info_score
    from vgm.metrics.mig import discretize
    from vgm.tools.explore import factor_per_dim
    rng = np.random.default_rng(0)
    n = 20000
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 32, n)], 1)
    codes = np.stack([10.0 * factors[:, 0] + 0.3 * factors[:, 1], rng.normal(size=n)], 1)
    bins = discretize(codes)[:, 0]
    raw = [mutual_info_score(f, bins) for f in factors.T]
    assert raw[1] > raw[0]                                         # unnormalised, pos_x would win
    out = factor_per_dim(codes, factors, ["shape", "pos_x"])
    assert out[0]["factor"] == "shape"
    assert out[0]["nmi"] == pytest.approx(raw[0] / math.log(3), rel=1e-3) and out[0]["nmi"] > 0.9
    assert out[1]["nmi"] < 0.01
    assert factor_per_dim(codes, np.zeros((n, 2), dtype=int), ["a", "b"]) == [None, None]


def test_autoencoder_with_one_latent_dimension(tmp_path):
    """An AE has no KL and no ELBO (None, said in a note), its sliders stay in index order; a 1-D latent is mapped
    on the x axis (y = 0) and a place on the map decodes to its x."""
    torch.manual_seed(0)
    s = Served(write_run(tmp_path / "ae", vgm.AE(input_shape=(1, 8, 8), latent_dim=1, hidden=(16,)), "digits"))
    try:
        e = s.explorer
        info = s.json("/api/info")
        assert info["deterministic"] and info["dims"] == [{"dim": 0, "kl": None, "active": None, "factor": None}]
        assert info["map_methods"] == ["latent"] and "no ELBO" in info["note"]
        pts = np.array(s.json("/api/map")["points"])
        with torch.no_grad():
            mu = e.model.encode(e.test).mean
        assert np.allclose(pts[:, 0], mu[:, 0].numpy(), atol=1e-5) and (pts[:, 1] == 0).all()
        assert s.json("/api/unmap?x=0.7&y=5")["z"] == [0.7]
        res = s.json("/api/encode", "POST", png_bytes(as_uint8(e.test[0, 0])))
        assert res["elbo"] is None and res["kl"] is None and res["kl_per_dim"] is None and res["sigma"] == [0.0]
        res = s.json("/api/interpolate?i=0&j=1&steps=3")
        assert all(p["elbo"] is None for p in res["linear"])
    finally:
        s.stop()


def test_dequantized_vae_scores_on_the_discrete_scale_and_maps_its_2d_latent(tmp_path):
    """A dequantized VAE's ELBO of an image is E_q[log p(y|z)] − D log L − KL with y = (k + u)/L under vgm's fixed
    evaluation noise (as `vgm evaluate` scores it); its 2-D latent is its own map, with no t-SNE. Catches the
    −D log L shift left out or of the wrong sign, and fresh noise."""
    from vgm.data.dequantize import dequantize
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,), likelihood="gaussian", levels=17,
                    dequantize=True)
    with torch.no_grad():                       # σ(x) ≈ 1e-6: the ELBO's Monte Carlo error vanishes, so that a
        last = model.encoder.head[-1]           # different noise draw u shows
        last.weight[2:] = 0
        last.bias[2:] = -30
    s = Served(write_run(tmp_path / "deq", model, "digits"), seed=1)    # seed 0 would draw u = the fixed noise
    try:
        e = s.explorer
        x = e.test[6]
        res = s.json("/api/encode", "POST", png_bytes(as_uint8(x[0])))
        y = dequantize(x[None], 17, eval_noise(x[None]))
        with torch.no_grad():
            q = e.model.encode(y)
            kl = kl_divergence(q.base_dist, Normal(0.0, 1.0)).sum().item()
            log_py = e.model.decode(q.sample((4000,))[:, 0]).log_prob(y.expand(4000, 1, 8, 8)).double()
        want = log_py.mean().item() - 64 * math.log(17) - kl
        assert res["kl"] == pytest.approx(kl, rel=1e-5)
        assert abs(res["elbo"] - want) < 4 * log_py.std().item() / math.sqrt(ex.ELBO_SAMPLES) + 1e-3
        m = s.json("/api/map")
        with torch.no_grad():
            mu = e.model.encode(e.test).mean
        assert m["method"] == "latent" and np.allclose(m["points"], mu.numpy(), atol=1e-5)
        assert s.json("/api/unmap?x=0.25&y=-1.5")["z"] == [0.25, -1.5]
        assert s.request("/api/map?method=tsne")[0] == 400 and s.request("/api/map?method=pca")[0] == 400
    finally:
        s.stop()


def test_flow_prior_vae_samples_through_its_flow_and_estimates_the_kl(tmp_path):
    """Under a (perturbed, so not the identity) flow prior, z ~ p(z) at T is f⁻¹(T·ε) as the model's sample()
    draws it, and the ELBO's KL, which has no closed form, is the mean of log q(z|x) − log p(z) over z ~ q(z|x)
    (4000 independent draws here). Catches a Gaussian draw in place of the flow, and one draw's KL taken for the
    mean."""
    torch.manual_seed(0)
    model = vgm.VAE(input_shape=(1, 8, 8), latent_dim=2, hidden=(16,), prior="flow", prior_depth=2, prior_hidden=8)
    with torch.no_grad():
        for p in model.prior_flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    s = Served(write_run(tmp_path / "flowprior", model, "digits"))
    try:
        e = s.explorer
        flow = e.model.prior_flow
        res = s.json("/api/prior?t=0.7")
        torch.manual_seed(res["seed"])
        with torch.no_grad():
            z = flow.inverse(0.7 * flow.base.sample((1,)))[0][0]
        assert np.allclose(res["z"], z.numpy(), atol=1e-5)
        assert "prior is not N(0, I)" in s.json("/api/info")["note"]
        x = e.test[2]
        res = s.json("/api/encode", "POST", png_bytes(as_uint8(x[0])))
        with torch.no_grad():
            q = e.model.encode(x[None])
            zs = q.sample((4000,))
            terms = (q.log_prob(zs) - flow.log_prob(zs)).double()[:, 0]
        assert abs(res["kl"] - terms.mean().item()) < 4 * terms.std().item() / math.sqrt(ex.ELBO_SAMPLES) + 1e-3
        torch.manual_seed(vgm.train.derived_seed(0, "explore:elbo"))     # the server's own 32 draws, repeated
        with torch.no_grad():
            q = e.model.encode(x[None].repeat(ex.ELBO_SAMPLES, 1, 1, 1))
            zs = q.rsample()
            draws = (q.log_prob(zs) - flow.log_prob(zs)).double()
        assert res["kl"] == pytest.approx(draws.mean().item(), rel=1e-5) and draws.std().item() > 0.05
    finally:
        s.stop()


IMAGE_MODELS = sorted(k for k, cls in vgm.MODELS.items() if "images" in cls.data_kinds)


@pytest.mark.parametrize("kind", IMAGE_MODELS)
def test_every_image_model_is_shown_or_refused_in_one_line(kind, tmp_path, capsys):
    """Each registered image model, untrained on 8x8 digits: either its page's endpoints answer 200 (with no NaN
    in any number: JSON refuses them), or the command refuses the run in one line, exit 2 (e.g. an IAF
    posterior, VQ codes, a model conditional on labels). Catches a model the page would crash on."""
    import dataclasses
    cls = vgm.MODELS[kind]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    kw = {"input_shape": (1, 8, 8), "arch": "mlp", "latent_dim": 3, "levels": 17, "classes": tuple("0123456789")}
    torch.manual_seed(0)
    try:
        model = cls(**{k: v for k, v in kw.items() if k in fields})
    except (ValueError, TypeError) as err:
        pytest.skip(f"{kind} is not built from these settings: {err}")
    run = write_run(tmp_path / kind, model, "digits")
    try:
        s = Served(run)
    except vgm.VgmError:
        one_line_error(capsys, ["explore", str(run)], "vgm explore")
        return
    try:
        info = s.json("/api/info")
        png = png_bytes(as_uint8(vgm.run.run_data(run, None)[1].test[0, 0]))
        s.json("/api/encode", "POST", png)
        if info["family"] == "flow":
            s.json("/api/samples?n=2&t=0.5")
            return
        z = ",".join(["0.5"] * info["latent_dim"])
        assert s.request("/api/decode?z=" + z)[0] == 200
        for path in ("/api/prior?t=0.5", "/api/map", "/api/interpolate?i=0&j=1&steps=3", "/api/point?i=0"):
            s.json(path)
        if info["traversal"]:
            s.json("/api/traversal?steps=3&z=" + z)
    finally:
        s.stop()


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    from vgm.models.seqvae import SeqVAE
    splits = vgm.load_data("names")
    torch.manual_seed(0)
    model = SeqVAE(alphabet=splits.meta["alphabet"], max_len=splits.meta["max_len"], hidden=16, embed_dim=8,
                   latent_dim=3)
    s = Served(write_run(tmp_path_factory.mktemp("seqvae"), model, "names"))
    yield s
    s.stop()


def test_text_samples_and_interpolation(text):
    """Samples are model.sample(n) under the seed reported, interpolations model.interpolate of the typed
    strings; characters outside the alphabet, empty and overlong text are 400."""
    e = text.explorer
    info = text.json("/api/info")
    assert info["family"] == "sequence" and info["can_interpolate"] and len(info["examples"]) == 20
    res = text.json("/api/text/sample?n=4")
    torch.manual_seed(res["seed"])
    with torch.no_grad():
        assert res["lines"] == to_text(e.model.sample(4), e.alphabet)
    res = text.json("/api/text/interpolate?a=anna&b=Robert&steps=4")
    with torch.no_grad():
        want = e.model.interpolate(encode_known("anna", e.alphabet)[0], encode_known("robert", e.alphabet)[0], 4)
    assert res["lines"] == to_text(want, e.alphabet) and len(res["lines"]) == 4
    for q, words in (("a=an%CE%A9&b=bob", "not in the model's alphabet"), ("a=&b=bob", "empty"),
                     ("a=" + "a" * 201 + "&b=bob", "longer"), ("a=ann&b=bob&steps=40", "steps"), ("a=ann", "missing")):
        status, _, data = text.request("/api/text/interpolate?" + q)
        assert status == 400 and words in json.loads(data)["error"], q
    assert text.request("/api/text/sample?n=65")[0] == 400 and text.request("/api/decode?z=0")[0] == 404


def test_vrnn_samples_text_and_has_no_interpolation(tmp_path):
    """A VRNN has no single latent code per sequence: samples (model.sample under the seed reported), and the
    interpolation endpoint answers 404 with the reason."""
    from vgm.models.vrnn import VRNN
    splits = vgm.load_data("names")
    torch.manual_seed(0)
    model = VRNN(alphabet=splits.meta["alphabet"], max_len=splits.meta["max_len"], hidden=16, embed_dim=8,
                 latent_dim=3)
    s = Served(write_run(tmp_path / "vrnn", model, "names"))
    try:
        assert not s.json("/api/info")["can_interpolate"]
        res = s.json("/api/text/sample?n=3")
        torch.manual_seed(res["seed"])
        with torch.no_grad():
            assert res["lines"] == to_text(s.explorer.model.sample(3), s.explorer.alphabet)
        status, _, data = s.request("/api/text/interpolate?a=ann&b=bob")
        assert status == 404 and "single latent code" in json.loads(data)["error"]
    finally:
        s.stop()


# ----- the command ---------------------------------------------------------------------------------------------

def one_line_error(capsys, argv: list[str], words: str) -> None:
    try:
        status = main(argv)
    except SystemExit as e:                 # usage errors leave through argparse
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("vgm: error:") and len(err.strip().splitlines()) == 1 and words in err, err


def test_runs_that_cannot_be_shown_are_one_line_errors(runs, tmp_path, capsys):
    from vgm.flows.models import RealNVP
    one_line_error(capsys, ["explore", str(tmp_path / "nowhere")], "does not exist")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(runs["vae"], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\0\1\2 not safetensors")
    one_line_error(capsys, ["explore", str(corrupt)], "corrupt")
    (corrupt / "config.json").write_text("{ not json")
    one_line_error(capsys, ["explore", str(corrupt)], "corrupt")
    moons = write_run(tmp_path / "moons", RealNVP(input_shape=(2,), depth=1, hidden=8), "moons")
    one_line_error(capsys, ["explore", str(moons)], "not an image model")
    one_line_error(capsys, ["explore", str(runs["vae"]), "--port", "70000"], "--port")
    one_line_error(capsys, ["explore", str(runs["vae"]), "--po", "8000"], "unrecognized arguments")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        one_line_error(capsys, ["explore", str(runs["vae"]), "--port", str(busy.getsockname()[1])], "cannot listen")


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["explore", "--help"])
    out = capsys.readouterr().out
    assert "(default: 8765)" in out and "(default: 127.0.0.1)" in out


def read_line(stream, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def test_serves_warns_for_another_host_and_stops_on_ctrl_c(runs):
    """The command prints its URL, warns when asked to listen beyond the loopback address, answers, and on
    SIGINT (Ctrl-C) stops with status 0 and no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "vgm.cli", "explore", str(runs["vae"]), "--port", "0", "--host",
                          "0.0.0.0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         # a shell's background job (e.g. `pytest &`) ignores SIGINT, and children inherit that
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = read_line(p.stdout, 120)
        assert "http://0.0.0.0:" in line and "Ctrl-C" in line, (line, p.poll())
        port = int(line.split("http://0.0.0.0:")[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)     # generous: CI machines get busy
        conn.request("GET", "/api/info")
        assert conn.getresponse().status == 200
        conn.close()
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=120) == 0
        err = p.stderr.read()
        assert "warning: listening on 0.0.0.0" in err and "stopped" in err and "Traceback" not in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# ----- the page in a browser -----------------------------------------------------------------------------------

FLAGS = (*BROWSER_FLAGS, "--window-size=1280,1400")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's chromium + chromedriver driven by Selenium (installed when absent, else the tests skip)."""
    chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('profile')}")
    opts.set_capability("goog:loggingOptions", {"browser": "ALL"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SE_OFFLINE", "true")                 # Selenium Manager must not fetch anything
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield driver
    driver.quit()


def wait_for(fn, timeout: float = 60, what: str = ""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def open_page(driver, served: Served) -> None:
    driver.get(f"http://127.0.0.1:{served.port}/")
    wait_for(lambda: driver.execute_script("return document.body.dataset.ready === '1'"), what="the page")
    driver.get_log("browser")                           # start each page with an empty console log


def canvas_pixels(driver, element_id: str) -> list[int]:
    return driver.execute_script(
        "const c = document.getElementById(arguments[0]);"
        "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);", element_id)


def no_console_errors(driver) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors


def artefact(driver, tmp_path: Path, name: str) -> None:
    """A screenshot kept with the test's files (and in $VGM_TEST_ARTEFACTS when set)."""
    path = tmp_path / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 1000
    keep = os.environ.get("VGM_TEST_ARTEFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / name)


def test_page_sliders_map_and_drawing_in_a_browser(browser, vae, tmp_path):
    """Drag the top slider: the decoded image's pixels change. Click a map point: the sliders take its posterior
    mean. Draw a stroke: a reconstruction appears with its ELBO."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    d = browser
    open_page(d, vae)
    wait_for(lambda: d.execute_script("return document.getElementById('decoded').dataset.z"), what="first image")
    sliders = d.find_elements(By.CSS_SELECTOR, "#sliders input[type=range]")
    assert len(sliders) == 4
    before = canvas_pixels(d, "decoded")
    ActionChains(d).click_and_hold(sliders[0]).move_by_offset(90, 0).pause(0.2).move_by_offset(60, 0) \
        .release().perform()
    assert float(sliders[0].get_attribute("value")) > 0.5
    wait_for(lambda: canvas_pixels(d, "decoded") != before, what="the decoded image to change")
    wait_for(lambda: d.execute_script("return document.getElementById('decoded').dataset.z") ==
             ",".join(f"{v:.4f}" for v in d.execute_script("return vgmExplore.z()")), what="the latest z decoded")

    # the most isolated point, so that a click on it cannot land on a neighbour
    pix = np.array(d.execute_script("return Array.from({length: arguments[0]}, (_, i) => vgmExplore.mapPixel(i))",
                                    len(vae.explorer.test)))
    dist = np.linalg.norm(pix[:, None] - pix[None], axis=-1) + np.eye(len(pix)) * 1e9
    i = int(dist.min(1).argmax())
    canvas = d.find_element(By.ID, "map")
    size = canvas.size
    ActionChains(d).move_to_element_with_offset(canvas, pix[i, 0] - size["width"] / 2,
                                                pix[i, 1] - size["height"] / 2).click().perform()
    mu = vae.explorer.mu[i]
    wait_for(lambda: all(abs(float(s.get_attribute("value")) - mu[int(s.get_attribute("data-dim"))].item()) <= 0.006
                         for s in sliders), what="the sliders to take the point's z")
    assert d.find_element(By.ID, "interp-a").get_attribute("value") == str(i)

    pad = d.find_element(By.ID, "pad")
    ActionChains(d).move_to_element_with_offset(pad, -10, -90).click_and_hold().move_by_offset(5, 60) \
        .move_by_offset(5, 60).release().perform()
    wait_for(lambda: d.execute_script("const r = document.querySelector('#encoded img.recon');"
                                      "return r !== null && r.complete && r.naturalWidth === 8"),
             what="a reconstruction")
    assert "ELBO" in d.find_element(By.CSS_SELECTOR, "#encoded .score").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#interp-out .strip-row")) == 2
    artefact(d, tmp_path, "explore_vae.png")
    no_console_errors(d)


def test_page_shows_the_traversal_grid_of_a_betavae(browser, betavae, tmp_path):
    from selenium.webdriver.common.by import By
    d = browser
    open_page(d, betavae)
    wait_for(lambda: len(d.find_elements(By.CSS_SELECTOR, "#traversal .trav-row")) == 4, what="traversal rows")
    assert d.find_element(By.ID, "traversal-panel").is_displayed()
    labels = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#traversal .trav-label")]
    assert all("KL" in t and "tracks" in t for t in labels), labels
    wait_for(lambda: d.execute_script("return Array.from(document.querySelectorAll('#traversal img'))"
                                      ".every(i => i.complete && i.naturalWidth > 0)"), what="traversal images")
    artefact(d, tmp_path, "explore_betavae.png")
    no_console_errors(d)


def test_page_shows_flow_samples(browser, flow, tmp_path):
    from selenium.webdriver.common.by import By
    d = browser
    open_page(d, flow)
    wait_for(lambda: d.execute_script("return Array.from(document.querySelectorAll('#samples img'))"
                                      ".filter(i => i.complete && i.naturalWidth === 8).length") == 16,
             what="16 samples")
    assert not d.find_element(By.ID, "latent").is_displayed()
    artefact(d, tmp_path, "explore_flow.png")
    no_console_errors(d)
