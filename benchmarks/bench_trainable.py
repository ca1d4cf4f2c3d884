"""Training throughput of the flagship trainable against a plain timm + PyTorch loop.

Both sides train the same timm model, at the same image size and batch size, over the
same in-memory uint8 tensors (the synthetic fundus set, split as the trainable splits
it), with the same optimizer (AdamW). The trainable runs through ``run_training`` with
augmentation off and no checkpoints; the plain loop is the textbook loop a person
would write by hand. Each rep runs both sides for ``--epochs`` epochs, each epoch a
training pass and a scoring pass on the validation images (the screening metrics of
:func:`arc_ray.screening.screening_metrics`, which the trainable reports), and times the whole
run with two clocks: wall time and process CPU time (on a busy shared CPU the wall clock mostly measures
other people's load, so the CPU headline uses CPU time; on a GPU, wall time). Reps
alternate sides; the script prints medians and their ratio (target ≥ 0.95).

    .venv/bin/python benchmarks/bench_trainable.py                     # CPU: resnet18, 32 px
    python benchmarks/bench_trainable.py --device cuda                  # GPU: resnet50, 224 px, bf16 + channels_last

On CUDA it also prints images/s for the trainable; NVIDIA's published figure for
ResNet-50 training with AMP on one A100 is about 2,470 img/s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from trainables.data import load_data  # noqa: E402
from trainables.timm_classifier import Config, run_training  # noqa: E402

DEFAULTS = {
    "cpu": {"model": "resnet18", "image_size": 32, "batch_size": 32, "n": 600, "epochs": 2, "reps": 5},
    "cuda": {"model": "resnet50", "image_size": 224, "batch_size": 256, "n": 4096, "epochs": 3, "reps": 3},
}


def make_config(args: argparse.Namespace) -> Config:
    return Config.model_validate({
        "model": args.model, "image_size": args.image_size, "batch_size": args.batch_size, "epochs": args.epochs,
        "optimizer": "adamw", "learning_rate": 1e-3, "weight_decay": 1e-4, "schedule": "cosine", "dropout": 0.0,
        "augmentation": {"flip": False, "rotate": 0.0, "crop": 0.0, "color_jitter": 0.0},
        "synthetic": {"n": args.n, "size": args.image_size, "seed": 0}, "device": args.device,
        "cache_max_bytes": 8 * 10**9,
    })


def run_trainable(cfg: Config) -> float:
    """The trainable's core, as Tune runs it minus the checkpoint writes; its last-epoch samples/s."""
    return run_training(cfg)["samples_per_s"]


def run_plain(cfg: Config) -> None:
    """A hand-written timm + PyTorch loop doing the same work: train, then score, each epoch."""
    from arc_ray.screening import screening_metrics

    cuda = cfg.device == "cuda"
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(cfg.seed)
    data = load_data(None, image_size=cfg.image_size, positive_class="glaucoma", train_split=cfg.train_split,
                     val_split=cfg.val_split, seed=cfg.seed,
                     synthetic=(cfg.synthetic.n, cfg.synthetic.size, cfg.synthetic.seed))
    images, labels = data.train.images.to(device), data.train.labels.to(device)  # uint8 N×3×S×S, int64 N
    val_images, val_labels = data.val.images.to(device), data.val.labels.to(device)
    model = timm.create_model(cfg.model, pretrained=False, num_classes=2).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(model.pretrained_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"], device=device).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / 255 - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if cuda else x

    for _ in range(cfg.epochs):
        model.train()
        for idx in torch.randperm(len(labels), device=device).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(normalise(images[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = torch.cat([model(normalise(x)).float() for x in val_images.split(2 * cfg.batch_size)])
        screening_metrics(val_labels.cpu().numpy(), logits.softmax(1)[:, 1].cpu().numpy())


def timed(fn, cfg: Config) -> tuple[float, float, object]:
    """(wall seconds, process CPU seconds, result) of one call."""
    if cfg.device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(cfg)
    if cfg.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--n", type=int, help="synthetic images (80%% are trained on)")
    parser.add_argument("--epochs", type=int, help="epochs per run")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as a 1-CPU trial)")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    torch.set_num_threads(args.threads)
    cfg = make_config(args)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"{cfg.model} @ {cfg.image_size}px, batch {cfg.batch_size}, {int(args.n * cfg.train_split)} train images, "
          f"{cfg.epochs} epochs per run, {args.reps} reps alternating; {where}")

    start = time.perf_counter()
    load_data(None, image_size=cfg.image_size, positive_class="glaucoma", train_split=cfg.train_split,
              val_split=cfg.val_split, seed=cfg.seed, synthetic=(args.n, cfg.image_size, 0))
    print(f"synthetic data: {args.n} images generated in {time.perf_counter() - start:.1f} s")

    images = int(args.n * cfg.train_split) * cfg.epochs  # training images per run
    runs: dict[str, list[tuple[float, float, object]]] = {"trainable": [], "plain": []}
    sides = [("trainable", run_trainable), ("plain", run_plain)]
    for rep in range(args.reps):
        for name, fn in sides if rep % 2 == 0 else sides[::-1]:
            runs[name].append(timed(fn, cfg))
        (tw, tc_, _), (pw, pc, _) = runs["trainable"][-1], runs["plain"][-1]
        print(f"rep {rep + 1}: trainable {images / tw:7.1f} img/s wall, {images / tc_:7.1f} img/CPU-s   "
              f"plain loop {images / pw:7.1f} img/s wall, {images / pc:7.1f} img/CPU-s")
    med = {name: [statistics.median(t[i] for t in runs[name]) for i in (0, 1)] for name in runs}
    wall_ratio = med["plain"][0] / med["trainable"][0]
    cpu_ratio = med["plain"][1] / med["trainable"][1]
    med_t = images / med["trainable"][0]
    print(f"median wall: trainable {med_t:.1f} img/s, plain loop {images / med['plain'][0]:.1f} img/s, "
          f"ratio {wall_ratio:.3f}")
    print(f"median CPU time: trainable {images / med['trainable'][1]:.1f} img/CPU-s, plain loop "
          f"{images / med['plain'][1]:.1f} img/CPU-s, ratio {cpu_ratio:.3f}")
    # On a CPU the headline uses process CPU time: on a shared machine the wall clock
    # mostly measures other people's load. On a GPU the work is not CPU time: wall clock.
    ratio = wall_ratio if args.device == "cuda" else cpu_ratio
    print(f"throughput ratio trainable / plain loop: {ratio:.3f} (target >= 0.95; "
          f"{'wall' if args.device == 'cuda' else 'CPU-time'} clock)")
    if args.device == "cuda":
        steady = statistics.median(float(r[2]) for r in runs["trainable"])  # type: ignore[arg-type]
        print(f"{cfg.model} {cfg.image_size}px bf16+channels_last: trainable training loop {steady:.0f} img/s "
              f"in its last epoch, {med_t:.0f} img/s over whole runs "
              f"(anchor: ~2470 img/s ResNet-50 AMP on one A100, NVIDIA)")
    else:
        demo = Config.model_validate({**_read_yaml("configs/baseline_cpu.yaml"), "experiment_id": "bench"})
        start = time.perf_counter()
        final = run_training(demo)
        print(f"baseline_cpu trial ({demo.model} {demo.image_size}px, {demo.synthetic.n} images, {demo.epochs} epochs, "
              f"{args.threads} thread(s)): {time.perf_counter() - start:.1f} s, auc {final['auc']:.3f}")
    print(f"headline: trainable_throughput_ratio={ratio:.3f}")
    return 0


def _read_yaml(rel: str) -> dict:
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parent.parent / rel).read_text())


if __name__ == "__main__":
    sys.exit(main())
