"""``medmllm demo`` (what ``make demo`` runs): the toolkit end to end.

First a tour of the scans stage on the real scans (read, previews, the papers' recipes, a DICOM
round trip with de-identification), then `medmllm.demo.run_demo`: MiniRad, P2Med's three
training stages, evaluation of the trained, untrained and blind models with 95% CIs, and how to
serve the result. ``--scans-only`` stops after the tour.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import typer

DEFAULT_SCANS = Path("../shared/data/scans")


def demo(
    out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Folder for everything the demo writes."),
    scans: Path = typer.Option(DEFAULT_SCANS, "--scans", help="Folder with head_ct.nii.gz and brain_t1_mri.nii.gz."),
    n: int = typer.Option(8000, "--n", min=100, help="MiniRad samples to synthesise (train split -> stages; val + test -> benchmark)."),
    seed: int = typer.Option(0, "--seed", help="MiniRad and training seed."),
    mrc: bool = typer.Option(True, "--mrc/--no-mrc", help="Follow-up exams as multi-round conversations (P2Med), or one exam per sample."),
    all_tasks: bool = typer.Option(False, "--all-tasks", help="Train on every MiniRad task family (records, VQA, ...), not only the benchmark's (slower per useful step)."),
    question_rounds: int = typer.Option(4, "--question-rounds", min=0, max=12, metavar="<int>",
                                        help="Extra yes/no rounds about other findings of the same image after each training question, in yes/no pairs (an odd K asks K-1); 0: one question per image."),
    report_rounds: bool = typer.Option(True, "--report-rounds/--no-report-rounds",
                                       help="Open each yes/no question of stage 3 with the report of its image (first-exam reports that follow the image; slower)."),
    course_rounds: bool = typer.Option(False, "--course-rounds",
                                       help="A follow-up exam's report round after its prior exam and report, its course kept (follow-up impressions that state a course; ~1 minute slower)."),
    single_exam_stages: str = typer.Option("task-balanced", "--single-exam-stages", metavar="<stages>",
                                           help="Comma-separated instruction stages (task-balanced, disease-balanced) whose report conversations are split into their exams; 'none': keep every visit's conversation."),
    benchmark_draw: float = typer.Option(1 / 3, "--benchmark-draw", min=0.0, max=10.0, metavar="<share>",
                                         help="A second MiniRad draw of this share of --n samples, all held out, for more benchmark questions (training unchanged); 0: none."),
    recipe: Path = typer.Option(None, "--recipe", help="Training recipe (default recipes/demo.yaml); its stage data paths are replaced."),
    scans_only: bool = typer.Option(False, "--scans-only", help="Only the tour of the scans stage."),
) -> None:
    """Run the toolkit end to end and write what it makes under OUT."""
    single_exam = stage_names(single_exam_stages)  # a wrong name fails here, before minutes of work
    scans_tour(out, scans)
    if scans_only:
        return
    from medmllm.demo import DEMO_RECIPE, DemoConfig, run_demo, summary_markdown

    summary = run_demo(DemoConfig(out=out, n=n, seed=seed, mrc=mrc, recipe=recipe or DEMO_RECIPE, log=typer.echo, question_rounds=question_rounds,
                                  report_rounds=DemoConfig.report_rounds if report_rounds else (),
                                  single_exam_stages=single_exam, benchmark_draw=benchmark_draw, course_rounds=course_rounds,
                                  **({"tasks": None} if all_tasks else {})))
    typer.echo(summary_markdown(summary))
    typer.echo(f"\nReports: {out}/eval/MODEL/PART/report.html; summary: {out}/summary.md")
    typer.echo(f"Talk to the trained model:\n  medmllm serve keys add {out}/keys.txt\n"
               f"  medmllm serve --model {summary['models']['trained']} --api-keys {out}/keys.txt   # then http://127.0.0.1:8000/ui/clinician")


def stage_names(text: str) -> tuple[str, ...]:
    """--single-exam-stages: "task-balanced,disease-balanced" -> the names; "none" -> ()."""
    from medmllm.demo.pipeline import INSTRUCTION_STAGES

    names = tuple(x.strip() for x in text.split(",") if x.strip() and x.strip() != "none")
    unknown = [x for x in names if x not in INSTRUCTION_STAGES]
    if unknown:
        raise typer.BadParameter(f"{', '.join(unknown)}: not an instruction stage ({', '.join(INSTRUCTION_STAGES)}, or none)",
                                 param_hint="--single-exam-stages")
    return names


def scans_tour(out: Path, scans: Path) -> None:
    """Step 1 of the demo: the scans stage on real scans."""
    import numpy as np
    from rich.console import Console

    from medmllm.errors import MedMLLMError
    from medmllm.scans import read
    from medmllm.scans.deid import deidentify
    from medmllm.scans.prepare import prepare
    from medmllm.scans.preview import save_preview
    from medmllm.scans.write import write_dicom_series, write_nifti

    console = Console(highlight=False, markup=False)
    ct_path, mr_path = scans / "head_ct.nii.gz", scans / "brain_t1_mri.nii.gz"
    if not ct_path.exists() or not mr_path.exists():
        raise MedMLLMError(f"{scans}: head_ct.nii.gz and brain_t1_mri.nii.gz not found; pass --scans DIR")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    console.rule("1. read real scans")
    ct, mr = read(ct_path), read(mr_path, modality="MR")
    for name, scan in (("head CT", ct), ("brain T1 MRI", mr)):
        lo, hi = scan.value_range
        console.print(f"{name:<13} {scan.modality} shape [D,H,W]={list(scan.shape)} spacing [z,y,x]={[round(s, 3) for s in scan.spacing]} mm "
                      f"orientation={scan.orientation} range=[{lo:g}, {hi:g}] {scan.unit}")

    xray_path = _chest_radiograph()
    if xray_path is not None:
        xray = read(xray_path)
        console.print(f"chest CR      {xray.modality} shape [D,H,W]={list(xray.shape)} (pydicom-data RG1_UNCR.dcm, MONOCHROME1 inverted)")

    console.rule("2. previews")
    for name, scan, window in (("head_ct_brain_window", ct, "brain"), ("head_ct_bone_window", ct, "bone"), ("brain_t1_mri", mr, None)):
        path = save_preview(scan, out / f"{name}.png", window=window)
        console.print(f"wrote {path}")
    if xray_path is not None:
        console.print(f"wrote {save_preview(xray, out / 'chest_cr.png')}")

    console.rule("3. prepare with the papers' recipes")
    for recipe in ("p2med-ct", "radfm-3d"):
        prepared = prepare(ct, recipe)
        path = write_nifti(prepared, out / f"head_ct_{recipe}.nii.gz")
        console.print(f"{recipe:<10} -> {list(prepared.shape)} in [{prepared.voxels.min():.2f}, {prepared.voxels.max():.2f}]  wrote {path}")
    if xray_path is not None:
        prepared = prepare(xray, "p2med-xray")
        path = write_nifti(prepared, out / "chest_cr_p2med-xray.nii.gz")
        console.print(f"p2med-xray -> {list(prepared.shape)} in [{prepared.voxels.min():.2f}, {prepared.voxels.max():.2f}]  wrote {path}")

    console.rule("4. DICOM round trip: series with shuffled file names -> read -> de-identify -> read")
    names = [f"IM{n:05d}" for n in random.Random(0).sample(range(10000), ct.shape[0])]
    dicom_dir, deid_dir = out / "head_ct_dicom", out / "head_ct_dicom_deid"
    for folder in (dicom_dir, deid_dir):  # new UIDs each run: start clean so each holds one series
        shutil.rmtree(folder, ignore_errors=True)
    write_dicom_series(ct.voxels, ct.spacing, dicom_dir, series_description="Head 1.5 mm", file_names=[n + ".dcm" for n in names],
                       patient_name="DEMO^PATIENT", patient_id="DEMO-0001")
    back = read(dicom_dir)
    console.print(f"read {len(names)} shuffled files: shape {list(back.shape)}, max |HU difference| = {np.abs(back.voxels - ct.voxels).max():g}")
    summary = deidentify(dicom_dir, deid_dir, salt="medmllm-demo")
    again = read(deid_dir)
    console.print(f"de-identified {summary.files_written} files; pixels unchanged: {bool(np.array_equal(again.voxels, back.voxels))}")
    console.rule(f"done in {time.perf_counter() - started:.1f} s; outputs in {out}/")


def _chest_radiograph() -> Path | None:
    """pydicom-data's chest CR (MONOCHROME1), when that package is installed; never downloads."""
    from pydicom.data import get_testdata_file

    found = get_testdata_file("RG1_UNCR.dcm", download=False)
    return Path(found) if found else None
