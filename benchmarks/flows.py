"""Training throughput (examples/s) and test log-likelihood (bits/dim) of each flow on MNIST in a CPU budget.

    OMP_NUM_THREADS=2 python benchmarks/flows.py --data-dir ../shared/data/mnist10k              # 10 min per flow
    OMP_NUM_THREADS=1 python benchmarks/flows.py --data-dir ../shared/data/mnist10k --budget-s 120   # docs table

Each flow trains with Adam (lr 1e-3, batches of 128, fresh dequantization noise every batch) until its
--budget-s of CPU time (this process's, summed over its threads; checked after each step) is spent, then is scored on the whole test split with
vgm.data.dequantize's fixed noise, with the weights of its best validation epoch (scored after every epoch,
outside the budget, as `vgm train` selects them): log_px in nats per image on the discrete (8-bit) scale and bits/dim, exactly as
`vgm evaluate` reports them for a run. Throughput = examples / CPU seconds of the training steps (no
evaluation); CPU time rather than wall-clock time, so that other work on a shared machine does not count. Prints one
table row per flow, then the JSON.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import vgm

FLOWS = {
    "realnvp": dict(depth=8, hidden=256),
    "maf": dict(depth=5, hidden=512),
    "nsf": dict(depth=4, hidden=128, bins=4),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="../shared/data/mnist10k")
    p.add_argument("--budget-s", type=float, default=600.0, help="training CPU seconds per flow")
    p.add_argument("--flows", default=",".join(FLOWS), help="comma-separated subset of " + ",".join(FLOWS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data = vgm.load_data("mnist", a.data_dir)
    rows = []
    print(f"MNIST {tuple(data.train.shape)} train, {len(data.test)} test, {data.meta['levels']} grey levels, "
          f"{torch.get_num_threads()} threads, budget {a.budget_s:.0f} s per flow")
    for kind in a.flows.split(","):
        torch.manual_seed(a.seed)
        model = vgm.MODELS[kind](input_shape=data.shape, levels=data.meta["levels"], **FLOWS[kind]).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(a.seed)
        seen, steps, train_s, wall0 = 0, 0, 0.0, time.perf_counter()
        best, best_epoch, best_state, epoch = -math.inf, 0, None, 0
        while train_s < a.budget_s:
            xs = data.train[torch.randperm(len(data.train), generator=gen)]
            for xb in xs.split(a.batch_size):
                t0 = time.process_time()
                loss = model.loss(xb)["loss"].mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                train_s += time.process_time() - t0
                seen, steps = seen + len(xb), steps + 1
                if train_s >= a.budget_s:
                    break
            epoch += 1
            val = vgm.evaluate(model, data.val, batch_size=500)["log_px"]
            model.train()
            if val > best:
                best, best_epoch = val, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        wall = time.perf_counter() - wall0
        final = vgm.evaluate(model, data.test, batch_size=500)
        model.load_state_dict(best_state)
        res = vgm.evaluate(model, data.test, batch_size=500)
        row = {"flow": kind, "config": FLOWS[kind], "params": sum(q.numel() for q in model.parameters()),
               "train_cpu_s": round(train_s, 1), "train_wall_s": round(wall, 1), "steps": steps, "epochs": round(seen / len(data.train), 2), "best_epoch": best_epoch,
               "examples_per_cpu_s": round(seen / train_s, 1), "test_log_px": round(res["log_px"], 2),
               "test_bits_per_dim": round(res["bits_per_dim"], 4),
               "final_test_bits_per_dim": round(final["bits_per_dim"], 4)}
        rows.append(row)
        print(f"{kind:8s} {row['params']:>10,} params  {row['examples_per_cpu_s']:8.1f} ex/CPU-s  {row['epochs']:6.2f} epochs  "
              f"(best {best_epoch})  test {row['test_log_px']:9.2f} nats  {row['test_bits_per_dim']:.4f} bits/dim  "
              f"(last epoch {row['final_test_bits_per_dim']:.4f})", flush=True)
    print(json.dumps({"budget_s": a.budget_s, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
