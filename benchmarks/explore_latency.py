"""Latency of `vgm explore`'s slider path: 1,000 decode requests (a new z each, as a drag sends them), timed by the
server (its Server-Timing header: from the request read to the PNG ready, parsing and checks included) and by the
client (the whole HTTP round trip on one kept-alive connection to 127.0.0.1).

    python benchmarks/explore_latency.py                          # trains a small MNIST MLP VAE first (~1 min)
    python benchmarks/explore_latency.py --run runs/vae-mnist     # or any run folder of an image model
    python benchmarks/explore_latency.py --screenshot docs/explore.png   # also the README's screenshot (chromium)

The quality bar is a server time under 50 ms for the MNIST MLP VAE on a CPU. The load average is printed with
the figures: on a shared machine other processes' work shows in them.
"""
from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST = Path(os.environ.get("VGM_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist10k"))


def train_mnist_vae(out: Path, data_dir: Path, epochs: int) -> Path:
    from vgm.cli import main
    args = ["train", "vae", "--data", "mnist", "--data-dir", str(data_dir), "--epochs", str(epochs),
            "--latent-dim", "16", "--out", str(out), "--quiet", "--device", "cpu"]
    if main(args) != 0:
        sys.exit("training failed")
    return out


def percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (f"p50 {np.percentile(a, 50):6.2f} ms   p95 {np.percentile(a, 95):6.2f} ms   "
            f"p99 {np.percentile(a, 99):6.2f} ms   max {a.max():6.2f} ms")


def measure(port: int, dim: int, limit: float, n: int, seed: int) -> tuple[list[float], list[float]]:
    """n sequential decode requests on one connection: (server ms, round-trip ms) per request."""
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    z = [0.0] * dim
    server, client = [], []
    for k in range(n + 20):                     # the first 20 warm up (connection, allocator, caches)
        j = rng.randrange(dim)                  # a drag moves one slider a little
        z[j] = max(-limit, min(limit, z[j] + rng.uniform(-0.3, 0.3)))
        query = ",".join(f"{v:.4f}" for v in z)
        t0 = time.perf_counter()
        conn.request("GET", "/api/decode?z=" + query)
        r = conn.getresponse()
        body = r.read()
        dt = (time.perf_counter() - t0) * 1000
        if r.status != 200 or not body.startswith(b"\x89PNG"):
            sys.exit(f"request {k} failed: {r.status} {body[:200]!r}")
        if k >= 20:
            client.append(dt)
            server.append(float(r.getheader("Server-Timing").split("dur=")[1]))
    conn.close()
    return server, client


def screenshot(url: str, path: Path) -> None:
    """The page after a slider move, a map click and a drawn digit, in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1180,1900", "--hide-scrollbars"):
        opts.add_argument(flag)
    os.environ["SE_OFFLINE"] = "true"
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        d.get(url)
        t0 = time.time()
        while d.execute_script("return document.body.dataset.ready") != "1" and time.time() - t0 < 120:
            time.sleep(0.2)
        px = d.execute_script("return vgmExplore.mapPixel(12)")
        canvas = d.find_element(By.ID, "map")
        ActionChains(d).move_to_element_with_offset(canvas, px[0] - canvas.size["width"] / 2,
                                                    px[1] - canvas.size["height"] / 2).click().perform()
        time.sleep(1.5)
        pad = d.find_element(By.ID, "pad")
        ActionChains(d).move_to_element_with_offset(pad, 30, -80).click_and_hold().move_by_offset(-50, 20) \
            .move_by_offset(-10, 40).move_by_offset(60, 30).move_by_offset(-60, 60).release().perform()
        time.sleep(1.5)
        d.execute_script("window.scrollTo(0, 0)")
        png = d.get_screenshot_as_png()
    finally:
        d.quit()
    from PIL import Image                      # 128 colours: a third of the bytes, the same picture
    import io
    Image.open(io.BytesIO(png)).convert("RGB").quantize(128).save(path, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--run", type=Path, default=None, help="run folder (default: train an MNIST MLP VAE)")
    p.add_argument("--data-dir", type=Path, default=MNIST, help="MNIST-layout folder for the default run")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the default run")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--screenshot", type=Path, default=None, help="also save the page's screenshot here")
    a = p.parse_args()
    from vgm.tools.explore import open_run, start
    with tempfile.TemporaryDirectory() as tmp:
        run = a.run or train_mnist_vae(Path(tmp) / "vae-mnist", a.data_dir, a.epochs)
        t0 = time.perf_counter()
        explorer = open_run(run, device="cpu")
        print(f"run {run}: {explorer.model.kind}, {explorer.family}, input {explorer.shape}, "
              f"latent {getattr(explorer, 'd', '-')}; loaded in {time.perf_counter() - t0:.1f} s")
        if explorer.family != "latent":
            sys.exit("the slider benchmark needs a model with a latent (vae, betavae, tcvae, ae)")
        server, _ = start(explorer, "127.0.0.1", 0)
        try:
            load0 = os.getloadavg()
            server_ms, client_ms = measure(server.port, explorer.d, explorer.range, a.requests, a.seed)
            load1 = os.getloadavg()
            print(f"{a.requests} slider decodes, CPU ({platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}), "
                  f"load average {load0[0]:.1f} before, {load1[0]:.1f} after")
            print(f"  server time  {percentiles(server_ms)}")
            print(f"  round trip   {percentiles(client_ms)}")
            if a.screenshot:
                screenshot(server.url, a.screenshot)
                print(f"wrote {a.screenshot}")
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
