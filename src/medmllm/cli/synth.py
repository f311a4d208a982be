"""``medmllm synth``: synthetic datasets.

    medmllm synth minirad -o DIR [--n N] [--seed S] [--workers W] [--no-mrc] [--dicom] ...
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Synthetic data: MiniRad (procedural X-ray, CT and MRI with exact ground truth).", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _group() -> None:
    """Synthetic data: MiniRad (procedural X-ray, CT and MRI with exact ground truth)."""


def _sizes(text: str, n: int, what: str) -> tuple[int, ...]:
    from medmllm.errors import MedMLLMError

    try:
        values = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise MedMLLMError(f"{what} {text!r}: give {n} integers separated by 'x', e.g. {'x'.join(['64'] * n)}")
    return values


def _weights(text: str) -> dict[str, float]:
    from medmllm.errors import MedMLLMError

    out = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        try:
            out[name.strip()] = float(value) if sep else 1.0
        except ValueError:
            raise MedMLLMError(f"--modalities {text!r}: write NAME=WEIGHT pairs, e.g. X-ray=0.5,CT=0.3,MRI=0.2") from None
    return out


@app.command("minirad")
def minirad(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (created; must be empty unless --force)."),
    n: int = typer.Option(1000, "-n", "--n", help="Number of samples (JSONL lines) to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives byte-identical files."),
    workers: int = typer.Option(1, "--workers", help="Processes generating patients in parallel (the output does not depend on it)."),
    mrc: bool = typer.Option(True, "--mrc/--no-mrc", help="Reports of a visit as one multi-round conversation (P2Med MRC), or one sample per exam."),
    dicom: bool = typer.Option(False, "--dicom", help="Write the first CT exam of each CT patient as a DICOM series."),
    xray_size: str = typer.Option("128x128", "--xray-size", help="Radiograph size HxW."),
    ct_shape: str = typer.Option("32x64x64", "--ct-shape", help="CT volume size DxHxW."),
    mri_shape: str = typer.Option("32x64x64", "--mri-shape", help="MRI volume size DxHxW."),
    modalities: str = typer.Option("X-ray=0.45,CT=0.35,MRI=0.2", "--modalities", help="Share of patients per modality."),
    val: float = typer.Option(0.1, "--val", help="Fraction of patients in the val split."),
    test: float = typer.Option(0.1, "--test", help="Fraction of patients in the test split (--val 0 --test 1: all held out)."),
    first_patient: int = typer.Option(0, "--first-patient", help="Index of the first patient: a draw from a later index shares no patient with one that stopped before it."),
    base_mri: Path = typer.Option(None, "--base-mri", help="A real T1 brain MRI (NIfTI, e.g. ../shared/data/scans/brain_t1_mri.nii.gz) as the base of brain exams."),
    force: bool = typer.Option(False, "--force", help="Replace MiniRad's files in a non-empty OUT."),
) -> None:
    """Generate MiniRad: chest X-rays, chest CTs and brain MRIs of synthetic patients with reports,
    questions, records and a ground-truth table."""
    from medmllm.synth.minirad import MiniRadConfig, generate

    config = MiniRadConfig(
        n=n, seed=seed, xray_size=_sizes(xray_size, 2, "--xray-size"), ct_shape=_sizes(ct_shape, 3, "--ct-shape"),
        mri_shape=_sizes(mri_shape, 3, "--mri-shape"), modalities=_weights(modalities), mrc=mrc, dicom=dicom, val=val, test=test, first_patient=first_patient,
        base_mri=str(base_mri) if base_mri is not None else None,
    )
    summary = generate(out, config, workers=workers, force=force)
    splits = ", ".join(f"{k} {v}" for k, v in summary.by_split.items())
    typer.echo(f"wrote {summary.samples} samples ({splits}) from {summary.patients} patients, {summary.exams} exams to {out} "
               f"in {summary.seconds:.1f} s ({summary.samples_per_second:.0f} samples/s)")
