"""DICOM in: files, series folders, multi-series folders, multi-frame objects and DICOMDIR.

Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
row x column direction cosines), never by file name or InstanceNumber. Gaps and uneven spacing
are measured and reported on ``Scan.warnings``. Pixel decoding is pydicom's, with the pylibjpeg
plugins for compressed transfer syntaxes (``pip install medmllm[codecs]``).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from medmllm.errors import ScanError, first_line
from medmllm.scans.orient import LPS_TO_RAS, to_canonical
from medmllm.scans.scan import Scan

# Descriptions that say whether contrast was given, when ContrastBolusAgent does not.
_NO_CONTRAST = re.compile(r"non[- ]?contrast|without contrast|\bnon[- ]?con\b|\bplain\b|\bNC\b|\bC-|平扫", re.I)
_CONTRAST = re.compile(r"contrast|enhanced|\bC\+|\bCE\b|\bpost\b|arterial|venous|portal|增强", re.I)

# Relative deviation of one slice step from the median step that counts as "uneven".
UNEVEN_TOLERANCE = 0.01
# A step this many times the median step means slices are missing.
GAP_FACTOR = 1.5


@contextmanager
def quiet_pydicom():
    """Silence pydicom's warnings and its logger: their messages can quote values from a file,
    and no patient identifier may reach a log. pydicom converts values lazily, on first access,
    so public entry points (`read`, `list_series`, `deidentify`) hold it for their whole run.

    The logger is switched off process-wide while it is held: other threads lose pydicom's
    messages for that time, which is the price of never logging a value from a file."""
    logger = logging.getLogger("pydicom")
    was_disabled, logger.disabled = logger.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = was_disabled


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICM preamble, or a ``.dcm`` file (some have no preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def contrast_of(ds: Dataset, description: str) -> bool | None:
    """Contrast given? ContrastBolusAgent / the enhanced usage sequence first, then the description."""
    if _text(ds, "ContrastBolusAgent"):
        return True
    for item in ds.get("ContrastBolusUsageSequence") or []:
        if str(item.get("ContrastBolusAgentAdministered", "")).upper() == "YES":
            return True
    if _NO_CONTRAST.search(description):
        return False
    if _CONTRAST.search(description):
        return True
    return None


def acquisition_datetime(ds: Dataset) -> datetime | None:
    """AcquisitionDateTime, else Acquisition / Series / Study / Content date and time."""
    dt = _text(ds, "AcquisitionDateTime")
    if dt:
        parsed = _parse_dt(dt[:14])
        if parsed:
            return parsed
    for prefix in ("Acquisition", "Series", "Study", "Content"):
        date = _text(ds, prefix + "Date")
        if date:
            return _parse_dt(date + _text(ds, prefix + "Time").split(".")[0])
    return None


def _parse_dt(text: str) -> datetime | None:
    digits = re.sub(r"\D", "", text)
    for fmt, n in (("%Y%m%d%H%M%S", 14), ("%Y%m%d%H%M", 12), ("%Y%m%d%H", 10), ("%Y%m%d", 8)):
        if len(digits) >= n:
            try:
                return datetime.strptime(digits[:n], fmt)
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- series listing


@dataclass
class SeriesInfo:
    """One series found in a folder, from headers only (no pixels read). No patient fields."""

    index: int
    description: str
    modality: str
    images: int
    frames: int
    rows: int
    columns: int
    slice_thickness: float | None
    contrast: bool | None
    acquisition_datetime: datetime | None
    files: list[Path] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "description": self.description,
            "modality": self.modality,
            "images": self.images,
            "frames": self.frames,
            "shape": [self.frames, self.rows, self.columns],
            "slice_thickness": self.slice_thickness,
            "contrast": self.contrast,
            "acquisition_datetime": self.acquisition_datetime.isoformat() if self.acquisition_datetime else None,
        }


@dataclass
class SeriesSelector:
    """Chooses one series in a folder. Every given field must match.

    Parse from text with `SeriesSelector.parse("description=lung,thickness=5,contrast=no")`.
    """

    description: str | None = None  # regular expression, case-insensitive, searched in SeriesDescription
    thickness: float | None = None  # slice thickness in mm, matched within 0.05 mm
    contrast: bool | None = None  # True: contrast-enhanced; False: not known to be enhanced
    index: int | None = None  # position in the listing of `list_series`

    @classmethod
    def parse(cls, text: str) -> SeriesSelector:
        sel = cls()
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep:
                raise ScanError(text, f"series selector part {part!r} is not KEY=VALUE (keys: description, thickness, contrast, index)")
            try:
                if key in ("description", "desc"):
                    re.compile(value)
                    sel.description = value
                elif key == "thickness":
                    sel.thickness = float(value.removesuffix("mm"))
                elif key == "contrast":
                    if value.lower() not in ("yes", "no", "true", "false", "1", "0"):
                        raise ValueError(value)
                    sel.contrast = value.lower() in ("yes", "true", "1")
                elif key == "index":
                    sel.index = int(value)
                else:
                    raise ScanError(text, f"unknown series selector key {key!r} (keys: description, thickness, contrast, index)")
            except (ValueError, re.error) as e:
                raise ScanError(text, f"bad value for series selector {key!r}: {e}") from None
        return sel

    def matches(self, s: SeriesInfo) -> bool:
        if self.index is not None and s.index != self.index:
            return False
        if self.description is not None and not re.search(self.description, s.description, re.I):
            return False
        if self.thickness is not None and (s.slice_thickness is None or abs(s.slice_thickness - self.thickness) > 0.05):
            return False
        # contrast=no also takes series with no sign of contrast either way (s.contrast None).
        if self.contrast is not None and (s.contrast is True) != self.contrast:
            return False
        return True


def _read_header(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None


def _dicomdir_files(dicomdir: Path) -> list[Path]:
    from pydicom.fileset import FileSet

    try:
        fs = FileSet(pydicom.dcmread(dicomdir))
    except Exception as e:  # pydicom raises many types for a broken DICOMDIR
        raise ScanError(dicomdir, f"cannot read DICOMDIR: {e}") from None
    return [Path(instance.path) for instance in fs if Path(instance.path).is_file()]


def _candidate_files(folder: Path) -> list[Path]:
    dicomdir = folder / "DICOMDIR"
    if dicomdir.is_file():
        return _dicomdir_files(dicomdir)
    files = []
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            p = Path(root) / name
            # Hidden files are temporaries or macOS "._" shadows, never images of the series.
            if name != "DICOMDIR" and not name.startswith(".") and is_dicom_file(p):
                files.append(p)
    return files


def scan_folder(folder: Path) -> tuple[list[SeriesInfo], dict[int, list[tuple[Path, Dataset]]]]:
    """Read every DICOM header under ``folder`` (or its DICOMDIR) and group them by series.

    Returns the listing and, per series index, its (path, header) pairs.
    """
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in _candidate_files(folder):
        ds = _read_header(path)
        if ds is None or not _has_image_geometry(ds):  # no Rows/Columns: SR, KO, DICOMDIR ... not images
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if not groups:
        raise ScanError(folder, "no DICOM images found in this folder")

    def first_time(members):
        times = [t for t in (acquisition_datetime(ds) for _, ds in members) if t]
        return min(times) if times else datetime.max

    ordered = sorted(groups.values(), key=lambda m: (first_time(m), _text(m[0][1], "SeriesNumber"), _text(m[0][1], "SeriesDescription")))
    listing, members_by_index = [], {}
    for index, members in enumerate(ordered):
        ds = members[0][1]
        description = _text(ds, "SeriesDescription")
        frames = sum(int(d.get("NumberOfFrames", 1) or 1) for _, d in members)
        times = [t for t in (acquisition_datetime(d) for _, d in members) if t]
        listing.append(
            SeriesInfo(
                index=index,
                description=description,
                modality=_text(ds, "Modality") or "OT",
                images=len(members),
                frames=frames,
                rows=int(ds.get("Rows", 0) or 0),
                columns=int(ds.get("Columns", 0) or 0),
                slice_thickness=_slice_thickness(ds),
                contrast=contrast_of(ds, description),
                acquisition_datetime=min(times) if times else None,
                files=[p for p, _ in members],
            )
        )
        members_by_index[index] = members
    return listing, members_by_index


def _has_image_geometry(ds: Dataset) -> bool:
    return "Rows" in ds and "Columns" in ds


def _slice_thickness(ds: Dataset) -> float | None:
    value = _float(ds.get("SliceThickness"))
    if value is None:
        shared = _functional_group(ds, None, "PixelMeasuresSequence")
        value = _float(shared.get("SliceThickness")) if shared is not None else None
    return value


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The series in a folder (walked recursively, or through its DICOMDIR), headers only."""
    with quiet_pydicom():
        return scan_folder(Path(folder))[0]


def read_dicom_folder(folder: Path, selector: SeriesSelector | None, max_bytes: int) -> Scan:
    listing, members = scan_folder(folder)
    chosen = [s for s in listing if selector is None or selector.matches(s)]
    if not chosen:
        raise ScanError(folder, f"no series matches the selector; the folder holds {len(listing)} series (see `medmllm scan info`)")
    if len(chosen) > 1:
        names = "; ".join(f"index={s.index} '{s.description}' {s.modality} {s.images} images" for s in chosen[:6])
        raise ScanError(
            folder,
            f"{len(chosen)} series mixed in one folder ({names}); choose one with --series, e.g. --series index={chosen[0].index}",
        )
    return read_series(folder, [p for p, _ in members[chosen[0].index]], max_bytes)


# --------------------------------------------------------------------------- pixels and geometry


def _functional_group(ds: Dataset, frame: int | None, sequence: str) -> Dataset | None:
    """The item of a functional group macro for one frame (per-frame first, then shared)."""
    if frame is not None:
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        if per_frame and frame < len(per_frame) and sequence in per_frame[frame]:
            return per_frame[frame][sequence][0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _check_size(path: Path, ds: Dataset, n_images: int, max_bytes: int) -> None:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise ScanError(path, f"zero-sized image (rows={rows}, columns={cols}, frames={frames})")
    needed = rows * cols * frames * samples * n_images * 4
    if needed > max_bytes:
        raise ScanError(path, f"declares {needed / 2**30:.1f} GiB of voxels, over the limit of {max_bytes / 2**30:.1f} GiB (raise it with --max-bytes or MEDMLLM_MAX_SCAN_BYTES)")


def _pixels(path: Path, ds: Dataset) -> np.ndarray:
    """Stored values as float32, (F, R, C) or (F, R, C, 3), modality LUT applied, MONOCHROME1 inverted."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ScanError(path, f"has no pixel data (a DICOM {_sop_name(ds)}, not an image)")
    try:
        arr = ds.pixel_array
    except Exception as e:  # decoders raise many types: missing plugin, truncated data, bad header
        raise ScanError(path, f"cannot decode pixel data ({ds.file_meta.get('TransferSyntaxUID', 'unknown transfer syntax')}): {first_line(e)}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        arr = arr[np.newaxis]
    # pydicom 3 already returns YBR_* colour data as RGB (its decoders' as_rgb default).
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "MONOCHROME1":
        # Invert over the stored range so that high = bright, as MONOCHROME2 (before rescale).
        bits = int(ds.get("BitsStored", 16) or 16)
        if int(ds.get("PixelRepresentation", 0) or 0):
            arr = -1 - arr.astype(np.int64)
        else:
            arr = (2**bits - 1) - arr.astype(np.int64)
    out = arr.astype(np.float32)
    for f in range(frames):
        slope, intercept = _rescale(ds, f if frames > 1 else None)
        if slope != 1.0:
            out[f] *= slope
        if intercept != 0.0:
            out[f] += intercept
    return out


def _rescale(ds: Dataset, frame: int | None) -> tuple[float, float]:
    source = ds
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        source = _functional_group(ds, frame if frame is not None else 0, "PixelValueTransformationSequence") or ds
    slope = _float(source.get("RescaleSlope"))
    intercept = _float(source.get("RescaleIntercept"))
    return (1.0 if slope is None else slope), (0.0 if intercept is None else intercept)


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    return getattr(uid, "name", None) or str(uid or "object")


def _plane(ds: Dataset, frame: int | None) -> tuple[np.ndarray | None, np.ndarray | None, tuple[float, float] | None]:
    """(orientation 6-vector, position 3-vector, pixel spacing (row, col)) of one image or frame."""
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    spacing = next((v for v in (ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing")) if _positive_pair(v)), None)
    if iop is None:
        item = _functional_group(ds, frame, "PlaneOrientationSequence")
        iop = item.get("ImageOrientationPatient") if item is not None else None
    if ipp is None or frame is not None:
        item = _functional_group(ds, frame, "PlanePositionSequence")
        if item is not None and item.get("ImagePositionPatient") is not None:
            ipp = item.get("ImagePositionPatient")
    if spacing is None:
        item = _functional_group(ds, frame, "PixelMeasuresSequence")
        spacing = item.get("PixelSpacing") if item is not None else None
    iop_v = np.array([float(v) for v in iop], dtype=float) if iop is not None and len(iop) == 6 else None
    ipp_v = np.array([float(v) for v in ipp], dtype=float) if ipp is not None and len(ipp) == 3 else None
    sp = (float(spacing[0]), float(spacing[1])) if _positive_pair(spacing) else None
    return iop_v, ipp_v, sp


def _positive_pair(value) -> bool:
    try:
        return value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0
    except (TypeError, ValueError):
        return False


@dataclass
class _Slice:
    path: Path
    ds: Dataset
    frame: int | None  # frame index in a multi-frame object, None for a single-frame file
    iop: np.ndarray | None
    ipp: np.ndarray | None
    pixel_spacing: tuple[float, float] | None


def read_series(where: Path, files: list[Path], max_bytes: int) -> Scan:
    """Assemble one series (single-frame files and/or multi-frame objects) into a canonical Scan."""
    datasets = []
    for path in files:
        try:
            datasets.append((path, pydicom.dcmread(path)))
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as e:
            raise ScanError(path, f"not a readable DICOM file: {first_line(e)}") from None
    first_path, first = datasets[0]
    _check_size(first_path, first, len(datasets), max_bytes)

    slices: list[_Slice] = []
    for path, ds in datasets:
        if not _has_image_geometry(ds):
            raise ScanError(path, f"has no pixel data (a DICOM {_sop_name(ds)}, not an image)")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        for f in range(frames) if frames > 1 else [None]:
            iop, ipp, sp = _plane(ds, f)
            slices.append(_Slice(path, ds, f, iop, ipp, sp))
    shapes = {(int(s.ds.Rows), int(s.ds.Columns), int(s.ds.get("SamplesPerPixel", 1) or 1)) for s in slices}
    if len(shapes) > 1:
        raise ScanError(where, f"series mixes images of different sizes {sorted(shapes)}; it is not one volume")

    warnings: list[str] = []
    order, slice_step, normal = _order_slices(where, slices, warnings)
    ordered = [slices[i] for i in order]

    # Pixels: decode each file once, then take its frames in the sorted order.
    decoded: dict[Path, np.ndarray] = {}
    planes = []
    for s in ordered:
        if s.path not in decoded:
            decoded[s.path] = _pixels(s.path, s.ds)
        planes.append(decoded[s.path][s.frame or 0])
    data = np.stack(planes)  # (k, j, i[, C]) in acquisition geometry
    decoded.clear()

    row_sp, col_sp = ordered[0].pixel_spacing or (1.0, 1.0)
    if ordered[0].pixel_spacing is None:
        warnings.append("no pixel spacing in the file: 1 mm assumed")
    iop = ordered[0].iop
    ds = ordered[0].ds
    description = _text(ds, "SeriesDescription")
    modality = _text(ds, "Modality") or "OT"
    if iop is not None:
        row_cos, col_cos = iop[:3], iop[3:]
        origin = ordered[0].ipp if ordered[0].ipp is not None else np.zeros(3)
        affine_lps = np.eye(4)
        # (k, j, i) -> LPS: k along the slice normal, j (rows) along column cosines, i along row cosines.
        affine_lps[:3, 0] = normal * slice_step
        affine_lps[:3, 1] = col_cos * row_sp
        affine_lps[:3, 2] = row_cos * col_sp
        affine_lps[:3, 3] = origin
        voxels, spacing, orientation = to_canonical(data, LPS_TO_RAS @ affine_lps)
    else:  # projection radiographs, ultrasound, secondary capture: no patient geometry
        voxels, spacing, orientation = data, (slice_step, row_sp, col_sp), ""
    return Scan(
        voxels=np.ascontiguousarray(voxels, dtype=np.float32),
        spacing=spacing,
        modality=modality,
        orientation=orientation,
        series_description=description,
        acquisition_datetime=min((t for t in (acquisition_datetime(d) for _, d in datasets) if t), default=None),
        source=str(where),
        unit="HU" if modality == "CT" else "",
        slice_thickness=_slice_thickness(ds),
        contrast=contrast_of(ds, description),
        warnings=warnings,
    )


def _order_slices(where: Path, slices: list[_Slice], warnings: list[str]) -> tuple[list[int], float, np.ndarray]:
    """Order by position along the slice normal; return (order, slice step in mm, unit normal)."""
    ds = slices[0].ds
    declared = _float(ds.get("SpacingBetweenSlices")) or _slice_thickness(ds) or 1.0
    have_geometry = all(s.iop is not None and s.ipp is not None for s in slices)
    if len(slices) == 1 or not have_geometry:
        normal = np.cross(slices[0].iop[:3], slices[0].iop[3:]) if slices[0].iop is not None else np.array([0.0, 0.0, 1.0])
        if len(slices) > 1:
            warnings.append(f"{len(slices)} images without positions: kept in stored order, {declared:g} mm apart assumed")
        return list(range(len(slices))), declared, normal

    iop0 = slices[0].iop
    if any(np.abs(s.iop - iop0).max() > 1e-3 for s in slices):
        raise ScanError(where, "slices have different orientations; the series is not one volume")
    normal = np.cross(iop0[:3], iop0[3:])
    normal /= np.linalg.norm(normal)
    positions = np.array([float(s.ipp @ normal) for s in slices])
    order = list(np.argsort(positions, kind="stable"))
    sorted_pos = positions[order]
    steps = np.diff(sorted_pos)
    if np.any(steps < 1e-3):
        dupes = int(np.sum(steps < 1e-3))
        raise ScanError(where, f"{dupes + 1} images share one slice position; the series holds several volumes (echoes, phases or two series mixed)")
    step = float(np.median(steps))
    gaps = np.where(steps > GAP_FACTOR * step)[0]
    for g in gaps[:5]:
        missing = round(steps[g] / step) - 1
        warnings.append(f"gap: about {missing} slice(s) missing between positions {sorted_pos[g]:.2f} and {sorted_pos[g + 1]:.2f} mm")
    if len(gaps) > 5:
        warnings.append(f"... and {len(gaps) - 5} more gaps")
    uneven = np.abs(steps - step) > UNEVEN_TOLERANCE * step
    uneven[gaps] = False
    if uneven.any():
        warnings.append(f"uneven slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm (median {step:.3f} mm used)")
    return order, step, normal
