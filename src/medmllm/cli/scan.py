"""``medmllm scan``: read, inspect, preview, prepare and de-identify scans."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Scans in: DICOM series, NIfTI and 2D images to model-ready volumes.", no_args_is_help=True)

SeriesOpt = typer.Option(None, "--series", help="Choose one series of a folder: 'description=REGEX,thickness=MM,contrast=yes|no,index=N'.")
VolumeOpt = typer.Option(None, "--volume", help="For 4D NIfTI: the volume index to take.")
ModalityOpt = typer.Option(None, "--modality", help="Override the modality (CT, MR, CR, DX ...): PNG, NPY and NIfTI do not carry one.")
MaxBytesOpt = typer.Option(None, "--max-bytes", help="Refuse scans larger than this many bytes of float32 voxels (default 8 GiB).")


def _read(path: Path, series, volume, modality, max_bytes):
    from medmllm.scans import read

    return read(path, series=series, volume=volume, modality=modality, max_bytes=max_bytes)


@app.command()
def info(
    path: Path = typer.Argument(..., help="A DICOM file or folder, DICOMDIR, NIfTI, PNG/JPEG/BMP/TIFF, NPY/NPZ."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys: modality, shape, spacing, orientation, value_range, unit, series)."),
    series: str = SeriesOpt,
    volume: int = VolumeOpt,
    modality: str = ModalityOpt,
    max_bytes: int = MaxBytesOpt,
) -> None:
    """Modality, shape [D, H, W], spacing [z, y, x] mm, orientation, value range and unit; for a folder, its series.

    Never prints a patient identifier: only de-identified fields are kept when a scan is read.
    """
    from medmllm.scans import list_series
    from medmllm.scans.read import detect_format

    listing = []
    kind = detect_format(path)
    if kind in ("dicom-folder", "dicomdir"):
        listing = list_series(path if kind == "dicom-folder" else path.parent)
    result = {"modality": None, "shape": None, "spacing": None, "orientation": None, "value_range": None, "unit": None}
    if len(listing) <= 1 or series:
        scan = _read(path, series, volume, modality, max_bytes)
        result.update(scan.info())
    result["series"] = [s.to_dict() for s in listing]
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print_info(result, several=len(listing) > 1 and not series)


def _print_info(result: dict, several: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if result["shape"] is not None:
        lo, hi = result["value_range"]
        unit = f" {result['unit']}" if result["unit"] else ""
        typer.echo(f"modality     {result['modality']}")
        typer.echo(f"shape        [D, H, W] = {result['shape']}" + (f" x {result['channels']} channels" if result["channels"] > 1 else ""))
        typer.echo(f"spacing      [z, y, x] = {[round(s, 4) for s in result['spacing']]} mm")
        typer.echo(f"orientation  {result['orientation'] or 'unknown (no patient geometry)'}")
        typer.echo(f"value range  [{lo:g}, {hi:g}]{unit}")
        for key, label in (("series_description", "description"), ("slice_thickness", "thickness"), ("contrast", "contrast"), ("acquisition_datetime", "acquired")):
            if result.get(key) not in (None, ""):
                typer.echo(f"{label:<12} {result[key]}")
        for w in result.get("warnings", []):
            typer.echo(f"warning      {w}", err=True)
    if result["series"]:
        table = Table(title=f"{len(result['series'])} series")
        for col in ("index", "description", "modality", "images", "shape", "thickness", "contrast", "acquired"):
            table.add_column(col)
        for s in result["series"]:
            table.add_row(str(s["index"]), s["description"], s["modality"], str(s["images"]), str(s["shape"]),
                          "" if s["slice_thickness"] is None else f"{s['slice_thickness']:g}", str(s["contrast"]), s["acquisition_datetime"] or "")
        console.print(table)
        if several:
            console.print("choose one with --series, e.g. --series index=0 or --series 'description=lung,thickness=5'")


@app.command()
def preview(
    path: Path = typer.Argument(..., help="A scan (any format `scan info` reads)."),
    out: Path = typer.Option(..., "-o", "--out", help="PNG file to write."),
    window: str = typer.Option(None, "--window", help="lung, mediastinum, bone, brain, or LEVEL,WIDTH; default: 0.5-99.5 percentiles."),
    tiles: int = typer.Option(16, "--tiles", min=1, max=256, help="How many evenly spaced slices to show."),
    series: str = SeriesOpt,
    volume: int = VolumeOpt,
    max_bytes: int = MaxBytesOpt,
) -> None:
    """Write a mosaic of slices as a PNG, for people to look at."""
    from medmllm.scans.preview import save_preview
    from medmllm.scans.windows import parse_window

    if window is not None:
        parse_window(window)  # fail on a bad window before reading a large scan
    scan = _read(path, series, volume, None, max_bytes)
    save_preview(scan, out, window=window, tiles=tiles)
    typer.echo(f"wrote {out} ({min(tiles, scan.shape[0])} slices of {scan.shape})")


@app.command()
def prepare(
    path: Path = typer.Argument(..., help="A scan (any format `scan info` reads)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output NIfTI (.nii or .nii.gz)."),
    recipe: str = typer.Option(..., "--recipe", help="p2med-xray, p2med-ct, radfm-2d, radfm-3d, ... (see docs/prepare.md)."),
    series: str = SeriesOpt,
    volume: int = VolumeOpt,
    modality: str = ModalityOpt,
    max_bytes: int = MaxBytesOpt,
) -> None:
    """Apply a named preparation recipe and write the model-ready volume as NIfTI."""
    from medmllm.errors import MedMLLMError
    from medmllm.scans.prepare import get_recipe
    from medmllm.scans.prepare import prepare as prepare_scan
    from medmllm.scans.write import write_nifti

    if not out.name.endswith((".nii", ".nii.gz")):
        raise MedMLLMError(f"{out}: output must end in .nii or .nii.gz")
    chosen = get_recipe(recipe)  # fail on an unknown recipe before reading
    scan = _read(path, series, volume, modality, max_bytes)
    prepared = prepare_scan(scan, chosen)
    if prepared.channels != 1:
        raise MedMLLMError(f"{path}: recipe {recipe} keeps colour channels; NIfTI output takes grey volumes")
    write_nifti(prepared, out)
    typer.echo(f"wrote {out}: shape {list(prepared.shape)}, spacing {[round(s, 4) for s in prepared.spacing]} mm, recipe {recipe}")


@app.command()
def deid(
    src: Path = typer.Argument(..., help="A DICOM file or a folder of DICOM files."),
    dst: Path = typer.Argument(..., help="Output file or folder (must not be inside SRC)."),
    salt: str = typer.Option(None, "--salt", envvar="MEDMLLM_DEID_SALT", help="Secret that makes UID and pseudonym mapping repeatable across runs."),
    dates: str = typer.Option("shift", "--dates", help="shift: per-patient consistent shift; remove: empty all dates."),
) -> None:
    """De-identify DICOM with the PS3.15 Basic Application Level Confidentiality Profile."""
    from medmllm.errors import MedMLLMError
    from medmllm.scans.deid import deidentify

    if dates not in ("shift", "remove"):
        raise MedMLLMError(f"--dates must be 'shift' or 'remove', got {dates!r}")
    summary = deidentify(src, dst, salt=salt, dates=dates)
    typer.echo(f"{dst}: {summary}")
