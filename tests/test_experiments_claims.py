"""The cards' claims (ae-vs-vae, latent-dim, reparam, posterior, elbo-gap, generate) in --quick mode: each result
points the way the claim says, and its exact checks (closed forms) hold; then `vgm report` on those runs (plus an
experiment as another engineer might write it): self-contained, generic, and loading in a real headless browser
(Debian's chromium driven by Selenium) from disk, every image decoded, no console error. The runs happen once."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import vgm
from conftest import BROWSER_FLAGS, CHROMEDRIVER, chromium_or_skip, run_cli
from vgm.cli import main
from vgm.experiments import load_all, write_results
from vgm.experiments.common import pyplot, save_figure
from vgm.experiments.elbo_gap import PPCA, bounds, log_weights
from vgm.experiments.posterior import exact_posterior, features, grid_posterior, log_evidence
from vgm.experiments.reparam import gradient_estimates, variance_study
from vgm.tools.report import find_results, fmt, render
from vgm.tools.sample_quality import frechet_distance

MINE = ("ae-vs-vae", "latent-dim", "reparam", "posterior", "elbo-gap", "generate")


@pytest.fixture(scope="session")
def quick_runs(tmp_path_factory):
    """Run the six experiments with --quick into one folder (as `vgm experiment NAME --quick` does)."""
    root = tmp_path_factory.mktemp("experiments")
    load_all()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny MLPs: a second thread buys nothing on 2 shared cores
    try:
        for name in MINE:
            out = root / name
            out.mkdir()
            torch.manual_seed(0)
            vgm.EXPERIMENTS[name](out=out, quick=True, seed=0, data_dir=None)
    finally:
        torch.set_num_threads(threads)
    return root


def results(root, name) -> dict:
    res = json.loads((root / name / "results.json").read_text())
    for f in res["figures"]:
        assert (root / name / f).stat().st_size > 1000, f
    assert res["verdict"] and res["claim"] and res["command"].startswith(f"vgm experiment {name}")
    return res


def test_ae_samples_are_garbage_vae_samples_are_digits(quick_runs):
    res = results(quick_runs, "ae-vs-vae")
    rows = {r["model"]: r for r in res["table"]}
    floor, ae, vae = rows["real training digits (floor)"], rows["AE"], rows["VAE"]
    assert ae["classifier_test_acc"] > 0.9                       # the judge can read digits
    assert floor["frechet"] < vae["frechet"] < ae["frechet"] / 2
    assert res["held"] is True and res["verdict"].startswith("Held")


def test_fewer_latent_dimensions_blurrier_reconstructions(quick_runs):
    res = results(quick_runs, "latent-dim")
    for model in ("AE", "VAE"):
        rs = sorted((r for r in res["table"] if r["model"] == model), key=lambda r: r["latent_dim"])
        assert rs[0]["test_recon_mse"] > 1.5 * rs[-1]["test_recon_mse"], model
        assert all(0 <= r["active_units"] <= r["latent_dim"] for r in rs)
    vae = sorted((r for r in res["table"] if r["model"] == "VAE"), key=lambda r: r["latent_dim"])
    assert vae[0]["test_kl"] < vae[-1]["test_kl"]                    # more dimensions used, more nats spent
    for r in vae:
        assert r["test_elbo"] == pytest.approx(-(r["test_recon_nats"] + r["test_kl"]), rel=1e-6, abs=1e-6)


def test_score_function_variance_dwarfs_reparameterised(quick_runs):
    res = results(quick_runs, "reparam")
    est = {(r["estimator"], r["samples"]): r for r in res["table"] if r["part"] == "estimator"}
    for key in ("var_grad_mu", "var_grad_sigma"):
        assert est["score function", 1][key] > 10 * est["reparameterised", 1][key]
        assert est["score + baseline", 4][key] < est["score function", 4][key]
        for e in ("reparameterised", "score function"):
            assert est[e, 256][key] < est[e, 1][key] / 50             # variance ∝ 1/S
    assert all(r["max_bias_in_se"] < 5 for r in est.values())          # all unbiased
    vae = {r["estimator"].split(" (")[0]: r for r in res["table"] if r["part"] == "VAE training"}
    assert vae["reparameterised"]["test_elbo"] > vae["score function"]["test_elbo"]
    assert res["held"] is True


def test_reparameterised_and_score_estimates_agree_with_the_exact_gradient():
    torch.manual_seed(0)
    mu, sigma, c = torch.tensor([0.3, -0.2]), torch.tensor([0.8, 1.2]), torch.ones(2)
    for est in ("reparameterised", "score function", "score + baseline"):
        gm, gs = gradient_estimates(est, mu, sigma, c, samples=64, repeats=4000)
        for g, exact in ((gm, 2 * (mu - c)), (gs, 2 * sigma)):
            se = g.std(0) / math.sqrt(g.shape[0])
            assert ((g.mean(0) - exact).abs() < 4 * se).all(), (est, g.mean(0), exact)


def test_posterior_calibration_and_cost(quick_runs):
    res = results(quick_runs, "posterior")
    cal = {r["method"]: r for r in res["table"] if r["part"] == "calibration"}
    ex, vi, mp = cal["exact posterior"], cal["mean-field VI"], cal["MAP (point estimate)"]
    assert abs(ex["coverage_90"] - 0.9) < 0.06 and abs(ex["coverage_50"] - 0.5) < 0.08
    assert mp["coverage_90"] < ex["coverage_90"] - 0.1                 # no parameter uncertainty: overconfident
    assert mp["coverage_90_outside_training_range"] < vi["coverage_90_outside_training_range"] \
        <= ex["coverage_90_outside_training_range"] + 0.02             # mean-field VI is under-dispersed
    assert ex["test_log_lik"] > mp["test_log_lik"]
    ev = next(r for r in res["table"] if r["part"] == "evidence")
    assert ev["evidence_minus_elbo"] == pytest.approx(ev["kl_q_to_exact_posterior"], abs=0.05)   # gap = KL
    assert ev["vi_sd_over_optimal_mean_field_sd"] == pytest.approx(1, abs=0.05)   # VI found its optimum:
    assert ev["vi_mean_error_in_sd"] < 0.1                                         # the exact mean, 1/√Λ_jj
    assert ev["vi_sd_over_exact_marginal_sd"] < 0.95
    cost = [r for r in res["table"] if r["part"] == "cost"]
    assert all(r["grid_mean_error"] < 1e-4 and r["grid_log_evidence_error"] < 1e-3 for r in cost if "grid_seconds" in r)
    at20 = next(r for r in cost if r["params"] == 20)
    assert at20["grid_seconds_extrapolated"] > 1e6 * at20["vi_seconds"]


def test_grid_integration_matches_the_closed_form_posterior():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(10, generator=g, dtype=torch.float64) * 2 - 1
    phi = features(x, 3)
    y = phi @ torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64) + 0.3 * torch.randn(10, generator=g, dtype=torch.float64)
    mean, _ = exact_posterior(phi, y)
    gm, glz = grid_posterior(phi, y, 40, chunk=5000)
    torch.testing.assert_close(gm, mean, atol=1e-6, rtol=0)
    assert glz.item() == pytest.approx(log_evidence(phi, y).item(), abs=1e-5)


def test_elbo_gap_and_importance_weighted_bounds(quick_runs):
    res = results(quick_runs, "elbo-gap")
    for model in ("VAE", "PPCA"):
        rs = sorted((r for r in res["table"] if r["model"] == model), key=lambda r: r["K"])
        values = [r["L_K"] for r in rs]
        assert all(b > a - 0.05 for a, b in zip(values, values[1:])), (model, values)   # L_K grows with K
        assert values[-1] > values[0]
    ppca = sorted((r for r in res["table"] if r["model"] == "PPCA"), key=lambda r: r["K"])
    exact, gap = ppca[0]["exact_log_px"], ppca[0]["exact_gap_KL_q_posterior"]
    assert gap > 0.1
    assert exact - ppca[0]["L_K"] == pytest.approx(gap, abs=0.05 + 3 * ppca[0]["mc_std_err"])  # ELBO = log p − KL
    assert abs(exact - ppca[-1]["L_K"]) < 0.1 * gap                       # L_K → log p(x)
    assert res["held"] is True


def test_ppca_reference_is_exact():
    d = vgm.load_data("digits")
    ppca = PPCA(d.train, 4, seed=0)
    x = d.test[:20]
    # sklearn's own PPCA log-likelihood agrees with ours (the random rotation leaves p(x) unchanged)
    ref = ppca.pca.score_samples(x.flatten(1).double().numpy())
    np.testing.assert_allclose(ppca.log_px(x).numpy(), ref, rtol=1e-4, atol=1e-2)
    torch.manual_seed(0)
    b = bounds(log_weights(ppca, x, 2000), (1, 2000))
    gap = ppca.exact_gap(x).mean().item()
    assert b[1][0] == pytest.approx(ppca.log_px(x).mean().item() - gap, abs=4 * b[1][1] + 0.02)


def test_generate_writes_samples_and_interpolations(quick_runs):
    res = results(quick_runs, "generate")
    (row,) = res["table"]
    assert res["held"] is None                                   # descriptive: no direction claimed
    assert row["real_train_frechet_floor"] < row["prior_samples_frechet"]
    assert row["shown_paths_ending_on_true_labels"] >= 0.5
    assert row["midpoint_nearest_train_dist_latent"] > 0 and row["midpoint_confidence_latent"] > 0.1
    assert {"generate_digits.png", "manifold_digits.png"} <= set(res["figures"])


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    b = rng.normal(size=(20000, 3)) * 2 + 1          # N(1, 4I): FD = 3·1² + Tr(I + 4I − 2·2I) = 3 + 3
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.05)


def test_same_seed_same_numbers():
    runs = [variance_study((1, 4), repeats=200, dim=3, seed=5) for _ in range(2)]
    assert runs[0] == runs[1]
    assert variance_study((1, 4), repeats=200, dim=3, seed=6) != runs[0]


# --- vgm report ---------------------------------------------------------------------------------------------

FLAGS = (*BROWSER_FLAGS, "--window-size=1280,900")


@pytest.fixture(scope="session")
def chromium() -> Path:
    return chromium_or_skip()


def foreign_experiment(root: Path) -> None:
    """An experiment as another engineer might write it: no 'part' column, extra results, HTML-ish text."""
    out = root / "flow-vs-vae"
    out.mkdir()
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [3, 1, 2])
    fig2 = save_figure(fig, out / "curve.png")
    write_results(out, name="flow-vs-vae", title="Flows <b>vs</b> VAEs & friends", claim="Exact likelihood beats a bound.",
                  command="vgm experiment flow-vs-vae --quick", table=[{"model": "realnvp", "nll": 1.5, "steps": 12000},
                                                                        {"model": "vae", "nll": 2.25e-7, "note": "ok"}],
                  figures=[fig2], verdict="Did not hold — 1.5 vs 2.2e-07", held=False,
                  per_epoch=[1.0, 0.5], settings={"lr": 1e-3})


def test_report_opens_from_disk_in_a_headless_browser(quick_runs, chromium, tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root = tmp_path / "runs"
    shutil.copytree(quick_runs, root)
    foreign_experiment(root)
    r = run_cli("report", root)
    assert r.returncode == 0, r.stderr
    page = root / "report.html"
    assert page.is_file()
    n_figures = sum(len(json.loads(p.read_text())["figures"]) for p in root.glob("*/results.json"))

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium)
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    opts.set_capability("goog:loggingOptions", {"browser": "ALL"})
    monkeypatch.setenv("SE_OFFLINE", "true")             # Selenium Manager must not fetch anything
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(page.as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        assert driver.title == "vgm: the cards' claims, measured"
        imgs = driver.find_elements(By.TAG_NAME, "img")
        assert len(imgs) == n_figures
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        assert all(w > 0 for w in widths), widths
        links = [a.get_attribute("href").split("#")[1] for a in driver.find_elements(By.CSS_SELECTOR, "nav a")]
        assert links[:6] == ["ae-vs-vae", "latent-dim", "reparam", "posterior", "elbo-gap", "generate"]
        assert links[6:] == ["flow-vs-vae"]
        for name in links:
            assert driver.find_element(By.ID, name).find_element(By.TAG_NAME, "h2")
        assert driver.find_elements(By.TAG_NAME, "script") == []
        assert "Flows <b>vs</b> VAEs & friends" in driver.find_element(By.ID, "flow-vs-vae").text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()


def test_report_is_self_contained_and_generic(quick_runs, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    foreign_experiment(root)
    shutil.copytree(quick_runs / "posterior", root / "posterior")
    # a figure listed but missing is reported as missing, not as a broken image
    res = json.loads((root / "flow-vs-vae" / "results.json").read_text())
    res["figures"].append("gone.png")
    (root / "flow-vs-vae" / "results.json").write_text(json.dumps(res))
    page = render(find_results(root))
    assert [r["name"] for r in find_results(root)] == ["posterior", "flow-vs-vae"]
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    assert page.count("<img ") == len(json.loads((root / "posterior" / "results.json").read_text())["figures"]) + 1
    assert "figure gone.png is missing" in page
    assert "Flows &lt;b&gt;vs&lt;/b&gt; VAEs &amp; friends" in page
    assert "<strong>calibration</strong>" in page and "<strong>cost</strong>" in page   # one table per part
    assert "More results (2)" in page and "per_epoch" in page
    assert (fmt(None), fmt(2.25e-7), fmt(1.5), fmt(12000), fmt(True), fmt(3.0)) == ("—", "2.250e-07", "1.5", "12,000", "yes", "3")


def test_report_errors_are_one_line_and_overwrite_nothing(tmp_path):
    r = run_cli("report", tmp_path / "nope")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "is not a folder" in r.stderr
    r = run_cli("report", tmp_path)
    assert r.returncode == 2 and "no results.json" in r.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "results.json").write_text("{not json")
    (tmp_path / "report.html").write_text("mine")
    r = run_cli("report", tmp_path)
    assert r.returncode == 2 and "cannot read" in r.stderr and r.stderr.strip().count("\n") == 0
    assert (tmp_path / "report.html").read_text() == "mine"


def test_report_marks_quick_runs_and_leaves_them_out_of_the_count(tmp_path):
    cases = {"full-held": ("", True), "full-not": ("", False), "full-descriptive": ("", None),
             "quick-not": (" --quick", False), "quick-held": (" --quick", True)}
    for name, (flag, held) in cases.items():
        (tmp_path / name).mkdir()
        write_results(tmp_path / name, name=name, title=name, claim="a claim", command=f"vgm experiment {name}{flag}",
                      table=[], figures=[], verdict="a verdict", held=held)
    (tmp_path / "marked").mkdir()                         # an experiment that records it: the field decides
    write_results(tmp_path / "marked", name="marked", title="marked", claim="a claim", command="vgm experiment marked",
                  table=[], figures=[], verdict="a verdict", held=False, quick=True)
    page = render(find_results(tmp_path))
    assert "6 experiments · 1 claim held · 1 did not · 1 descriptive · 3 quick runs (smoke tests, not counted)" in page
    # each experiment has a badge in the contents and one on its card
    assert (page.count('class="badge quick"'), page.count('class="badge ok"'), page.count('class="badge bad"'),
            page.count('class="badge na"')) == (6, 2, 2, 2)
    assert page.count("quick run · claim did not hold") == 4 and page.count("quick run · claim held") == 2
    assert page.count("Verdict of a quick run") == 3 and "More results" not in page


def test_report_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    blocks = re.split(r"\n(?=  -)", capsys.readouterr().out.split("options:")[1].strip("\n"))
    assert len(blocks) == 3 and all("default" in b for b in blocks[1:]), blocks
