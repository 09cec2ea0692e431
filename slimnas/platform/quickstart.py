"""``slimnas quickstart``: for now a smoke run of the foundation on real data.

It trains the ``tiny`` supernet for a few steps in the paper's soft Gumbel mode and in the hard mode on scikit-learn's
bundled UCI digits (upsampled to 64x64), orders its channels, extracts the densest arch and a narrower one, checks that
each extracted model computes what the supernet computes, fuses one for inference, and prints what it measured. The
full pipeline (latency table, training recipe, slimming against baselines, MLflow) replaces it as it lands.
"""

from __future__ import annotations

import time

__all__ = ["run_smoke"]


def _digits(img_size: int):
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.5) / 0.5
    return x, torch.tensor(data.target)


def run_smoke(steps: int = 20, seed: int = 0, batch_size: int = 64) -> dict:
    import torch

    from slimnas.search_spaces.efficientformer import SearchSpace, SuperNet, fuse_for_inference

    torch.manual_seed(seed)
    space = SearchSpace.preset("tiny")
    x, y = _digits(space.img_size)
    n_train = int(0.8 * len(x))
    print(f"[1/4] space 'tiny': {space.num_archs():,} archs; digits {n_train} train / {len(x) - n_train} val images")
    net = SuperNet(space, num_classes=10)
    net.seed_sampling(seed)
    opt = torch.optim.AdamW([{"params": net.weight_parameters(), "lr": 2e-3},
                             {"params": net.arch_parameters(), "lr": 5e-3, "weight_decay": 0.0}])
    gen = torch.Generator().manual_seed(seed)
    report: dict = {}
    for mode in ("soft", "hard"):
        net.set_sampling(mode=mode)
        net.train()
        start, losses = time.perf_counter(), []
        for _ in range(steps):
            idx = torch.randint(0, n_train, (batch_size,), generator=gen)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        dt = (time.perf_counter() - start) / steps
        report[mode] = {"first_loss": losses[0], "last_loss": losses[-1], "step_s": dt}
        print(f"[2/4] {mode:4s} mode: {steps} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {dt * 1e3:.0f} ms/step")
    net.eval()
    net.sort_channels()
    xv, yv = x[n_train:], y[n_train:]
    narrow = space.max_arch()
    narrow = narrow.with_width(3, space.max_widths[3] - 32).with_kind(2, 0, "id")
    for name, arch in (("max arch", space.max_arch()), ("narrower arch", narrow)):
        model = net.extract(arch).eval()
        with torch.no_grad():
            sup, ext = net(xv, arch=arch), model(xv)
        acc = (ext.argmax(1) == yv).float().mean().item()
        diff = (sup - ext).abs().max().item()
        report[name] = {"top1": acc, "max_abs_diff": diff}
        print(f"[3/4] {name}: {arch}  val top-1 {acc:.3f} (supernet weights, no BN recalibration); "
              f"extract vs supernet max |diff| {diff:.1e}")
    fused = fuse_for_inference(net.extract(space.max_arch()).eval())
    with torch.no_grad():
        diff = (fused(xv) - net(xv, arch=space.max_arch())).abs().max().item()
    report["fused_max_abs_diff"] = diff
    print(f"[4/4] fused for inference: max |diff| {diff:.1e}. Smoke run done.")
    return report
