"""The ``physml`` command.

The arguments are parsed before anything heavy is imported: torch, PyTorch Geometric and
Lightning are imported inside the command functions, so ``physml --help`` and
``physml COMMAND --help`` answer at once."""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings

from .errors import TrainingDiverged
from .settings import DEFAULT_AVERAGE, DEFAULT_EPOCHS, FAST_EPOCHS, MASS_CUT


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _finite_float(low: float, strict: bool):
    """An argparse type: a finite float > ``low`` (``strict``) or >= ``low``."""
    bound = f"{'>' if strict else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (math.isfinite(value) and (value > low if strict else value >= low)):
            raise argparse.ArgumentTypeError(f"expected a finite number {bound}, got {text!r}")
        return value

    return parse


def _add_make_dataset(sub) -> None:
    p = sub.add_parser(
        "make-dataset",
        help="simulate LH / CV / 1P sets of halo catalogs",
        description=(
            "Simulate halo catalogs with physml's particle-mesh code: a Latin hypercube over "
            "Omega_m in [0.1, 0.5] and sigma_8 in [0.6, 1.0] (one seed per catalog), a "
            "cosmic-variance set at (0.3, 0.8), and a 1P set (sigma_8 stepped at one seed). "
            "Writes halos_lh.npz, halos_cv.npz, halos_1p.npz and checksums.json into OUT. "
            "Resumable: rerun the same command after an interruption and it continues."
        ),
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--n-lh", type=int, default=1000, help="Latin-hypercube catalogs (1000)")
    p.add_argument("--n-cv", type=int, default=27, help="cosmic-variance catalogs (27)")
    p.add_argument("--n-1p", type=int, default=11, help="sigma_8 steps of the 1P set (11)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, 1 torch thread each")
    p.add_argument("--particles", type=int, default=64, help="particles per side (64)")
    p.add_argument("--mesh", type=int, default=128, help="PM mesh cells per side (128)")
    p.add_argument("--steps", type=int, default=20, help="PM time steps to a = 1 (20)")
    p.add_argument(
        "--box", type=_finite_float(0, strict=True), default=25.0, help="box side in Mpc/h (25)"
    )
    p.add_argument(
        "--mass-cut",
        type=_finite_float(0, strict=False),
        default=MASS_CUT,
        help=f"smallest halo mass kept, Msun/h ({MASS_CUT:.0e})".replace("e+", "e"),
    )
    p.add_argument("--design-seed", type=int, default=0, help="seed of the Latin hypercube (0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _make_dataset(args) -> int:
    from .datasets import make_dataset, write_checksums
    from .simulation import SimulationConfig

    try:  # checked before anything is simulated
        config = SimulationConfig(
            box_size=args.box,
            n_particles=args.particles,
            n_mesh=args.mesh,
            n_steps=args.steps,
            mass_cut=args.mass_cut,
        )
    except ValueError as err:
        given = f"--particles {args.particles} --mesh {args.mesh} --steps {args.steps}"
        raise ValueError(f"{given}: {err}") from err
    make_dataset(
        args.out,
        n_lh=args.n_lh,
        n_cv=args.n_cv,
        n_1p=args.n_1p,
        workers=args.workers,
        config=config,
        design_seed=args.design_seed,
        progress=not args.quiet,
    )
    sums = write_checksums(args.out)
    print(json.dumps(sums, indent=1))
    return 0


def _add_info(sub) -> None:
    sub.add_parser(
        "info",
        help="describe the bundled data sets",
        description=(
            "Check the sha256 of each bundled catalog set against the package's "
            "checksums.json, load it and print a summary."
        ),
    )


def _info(args) -> int:
    import numpy as np

    from .catalogs import load_catalogs
    from .datasets import SET_NAMES, verify_bundled

    verified = []
    for name in SET_NAMES:
        path, sha, sums_path = verify_bundled(name)
        verified.append(f"{path.name} {sha[:16]}")
        cset = load_catalogs(path)
        n = cset.n_halos
        om, s8 = cset.omega_m, cset.sigma_8
        print(
            f"{name:>3}: {len(cset):5d} catalogs, {n.min()}..{n.max()} halos per catalog "
            f"(median {int(np.median(n))}), Omega_m {om.min():.3f}..{om.max():.3f}, "
            f"sigma_8 {s8.min():.3f}..{s8.max():.3f}  [{cset.source}]"
        )
    print(f"sha256 verified against {sums_path}: {', '.join(verified)} (first 16 hex digits)")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the lecture GNN on the bundled catalogs",
        description=(
            "Train the message-passing GNN on the fixed train / validation split of the "
            "bundled Latin-hypercube set (or --catalogs), keep the best checkpoint by "
            "validation loss, and evaluate it on the test split. Writes best.ckpt, "
            "predictions.png, CSV logs in OUT/csv/ (TensorBoard logs in OUT/tb/ instead when "
            "tensorboard is installed) and, last, metrics.json (the record that the run "
            "finished) into --out, and prints the test metrics as JSON."
        ),
    )
    p.add_argument("--embedding", default="invariant", help="cartesian | invariant (invariant)")
    p.add_argument("--target", default="sigma8", help="sigma8 | both (sigma8)")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"maximum epochs ({DEFAULT_EPOCHS}; {FAST_EPOCHS} with --fast)",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help=f"fast mode: a small subset and {FAST_EPOCHS} epochs (as in CI)",
    )
    p.add_argument("--out", default="runs/lecture", help="output directory (runs/lecture)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or an interrupted run in --out (refused otherwise)",
    )
    p.add_argument("--catalogs", default=None, help="a catalog file instead of the bundled set")
    p.add_argument("--labels", default=None, help="labels file for --catalogs, if separate")
    p.add_argument(
        "--augment",
        action="store_true",
        help="random cube symmetries + periodic shifts of the training catalogs (only "
        "--embedding cartesian sees them: the invariant features do not change)",
    )
    p.add_argument(
        "--average",
        default=DEFAULT_AVERAGE,
        choices=("none", "ema"),
        help=(
            f"none | ema ({DEFAULT_AVERAGE}): ema validates and keeps an exponential moving "
            "average of the weights (decay 0.995 per step), none the raw weights; "
            "benchmarks/bench_information.py measures their seed spreads side by side"
        ),
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _train(args) -> int:
    from .catalogs import load_catalogs
    from .experiment import check_labels, train
    from .graphdata import fast_mode

    cset = load_catalogs(args.catalogs, args.labels) if args.catalogs else None
    if cset is not None and args.labels:
        check_labels(cset, args.target, f"{args.catalogs} with labels {args.labels}")
    res = train(
        args.out,
        embedding=args.embedding,
        target=args.target,
        epochs=args.epochs,
        fast=args.fast or fast_mode(),
        cset=cset,
        augment=args.augment,
        seed=args.seed,
        progress=not args.quiet,
        overwrite=args.overwrite,
        average=args.average,
    )
    print(json.dumps(res["metrics"]))
    print(
        f"trained {res['epochs_run']} epochs in {res['seconds']:.0f} s; wrote {res['checkpoint']}",
        file=sys.stderr,
    )
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a checkpoint on a catalog file",
        description=(
            "Evaluate a trained checkpoint on catalogs in any supported format (.npz with "
            "params, .npz + a labels .npy, CAMELS groups_NNN.hdf5 + a CosmoAstroSeed table), "
            "with the checkpoint's own preprocessing (mass cut, feature standardisation, "
            "linking radius). Prints one JSON line: epsilon, r2, chi2, coverage_68 and "
            "coverage_95 per target, and n_catalogs. Warns when the catalogs include (by "
            "content) the checkpoint's training or validation catalogs."
        ),
    )
    p.add_argument("--checkpoint", required=True, help="a best.ckpt of a finished physml train run")
    p.add_argument("--catalogs", required=True, help="catalog file or directory")
    p.add_argument("--labels", default=None, help="labels file (.npy or CAMELS table)")


def _evaluate(args) -> int:
    from .experiment import evaluate

    print(json.dumps(evaluate(args.checkpoint, args.catalogs, args.labels)))
    return 0


def _add_baseline(sub) -> None:
    p = sub.add_parser(
        "baseline",
        help="the summary-statistics baseline on the same split",
        description=(
            "Fit a regression on summary statistics (halo counts above mass thresholds, "
            "mass moments, the two-point function) on the fixed training split of the "
            "bundled set and print its test metrics as JSON; writes metrics.json and "
            "predictions.png into --out."
        ),
    )
    p.add_argument("--out", default="runs/baseline", help="output directory (runs/baseline)")
    p.add_argument("--target", default="sigma8", help="sigma8 | both (sigma8)")
    p.add_argument("--kind", default="quadratic", help="linear | quadratic | mlp (quadratic)")
    p.add_argument(
        "--features",
        default="all",
        help=(
            "all | abundance | clustering (all): every statistic, only the mass-function ones "
            "(counts above mass thresholds, mean and largest log mass) or only the two-point "
            "function"
        ),
    )
    p.add_argument("--fast", action="store_true", help="fast mode: the small subset of CI")


def _baseline(args) -> int:
    from .experiment import baseline
    from .graphdata import fast_mode

    metrics = baseline(
        args.out, args.target, args.kind, fast=args.fast or fast_mode(), features=args.features
    )
    print(json.dumps(metrics))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="physml",
        description="Lecture 14 course tools: simulate halo catalogs, train and evaluate GNNs.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"physml {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_baseline(sub)
    _add_info(sub)
    _add_make_dataset(sub)
    return parser


COMMANDS = {
    "train": _train,
    "evaluate": _evaluate,
    "baseline": _baseline,
    "info": _info,
    "make-dataset": _make_dataset,
}


#: failures that come from the input, the files or the machine, not from a bug in physml:
#: reported as one line and exit code 2 (anything else keeps its traceback)
EXPECTED_ERRORS = (ValueError, OSError, MemoryError, TrainingDiverged)


def error_line(err: BaseException) -> str:
    """One line for an expected failure: the file or option and what was expected."""
    if isinstance(err, MemoryError):
        text = (
            "out of memory; the input is larger than this machine can hold (see "
            "physml.limits for the size limits checked before allocating)"
        )
    elif isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _one_line_warnings(command: str):
    """A :func:`warnings.showwarning` that prints a warning raised in physml's own code as
    one line ``physml COMMAND: warning: ...`` (no source line: the message names the file
    and what looks wrong) and leaves every other warning to ``show``."""
    import os

    home = os.path.dirname(os.path.abspath(__file__)) + os.sep
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if os.path.abspath(filename).startswith(home):
            text = " ".join(str(message).split())
            print(f"physml {command}: warning: {text}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def main(argv=None) -> int:
    """Run the command line. Every expected failure (:data:`EXPECTED_ERRORS`) ends as one
    line ``physml COMMAND: error: ...`` on stderr and exit code 2; bad options exit 2 too
    (argparse); a bug keeps its traceback. A warning of physml's (input that may be
    intended, e.g. labels outside the prior box) is one line ``physml COMMAND: warning:``."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warnings(args.command)
        try:
            return COMMANDS[args.command](args)
        except EXPECTED_ERRORS as err:
            print(f"physml {args.command}: error: {error_line(err)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
