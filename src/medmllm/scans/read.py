"""`read(path) -> Scan`: every supported file kind, detected by content, into one `Scan`.

Formats: DICOM (one file, a series folder, a multi-series folder with a selector, multi-frame,
DICOMDIR), NIfTI-1/2 (``.nii``, ``.nii.gz``), PNG / JPEG / BMP / TIFF, NPY / NPZ.
Sizes declared in headers are checked against ``max_bytes`` before anything is allocated.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path

import numpy as np

from medmllm.errors import ScanError, first_line
from medmllm.scans.dicom import SeriesSelector, is_dicom_file, quiet_pydicom, read_dicom_folder, read_series
from medmllm.scans.orient import to_canonical
from medmllm.scans.scan import Scan

DEFAULT_MAX_BYTES = 8 * 2**30  # float32 voxels; MEDMLLM_MAX_SCAN_BYTES overrides
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image"),
    (b"\xff\xd8\xff", "image"),
    (b"BM", "image"),
    (b"II*\x00", "image"),
    (b"MM\x00*", "image"),
    (b"\x93NUMPY", "npy"),
    (b"PK\x03\x04", "npz"),
]


def max_bytes_default() -> int:
    value = os.environ.get("MEDMLLM_MAX_SCAN_BYTES")
    return int(float(value)) if value else DEFAULT_MAX_BYTES


def read(
    path: str | Path,
    *,
    series: SeriesSelector | str | None = None,
    volume: int | None = None,
    modality: str | None = None,
    max_bytes: int | None = None,
) -> Scan:
    """Read a scan into the canonical ``(D, H, W)`` LPS layout (see `medmllm.scans.scan`).

    Args:
        path: a file, a DICOM folder, or a DICOMDIR.
        series: for a folder of several series, which one (`SeriesSelector` or its text form,
            e.g. ``"description=lung,thickness=5,contrast=no"``).
        volume: for 4D NIfTI, the index of the volume to take.
        modality: overrides the modality (PNG, NPY and NIfTI files do not carry one).
        max_bytes: refuse scans whose float32 voxels would exceed this (default 8 GiB).

    Raises:
        ScanError: one line naming the file and the problem, for every unreadable input.
    """
    path = Path(path)
    limit = max_bytes if max_bytes is not None else max_bytes_default()
    selector = SeriesSelector.parse(series) if isinstance(series, str) else series
    kind = detect_format(path)
    with quiet_pydicom():  # pydicom messages can quote file values: keep them out of logs
        try:
            if kind == "dicom-folder":
                scan = read_dicom_folder(path, selector, limit)
            elif kind == "dicomdir":
                scan = read_dicom_folder(path.parent, selector, limit)
            elif kind == "dicom":
                scan = read_series(path, [path], limit)
            elif kind == "nifti":
                scan = _read_nifti(path, volume, limit)
            elif kind == "image":
                scan = _read_image(path, limit)
            else:
                scan = _read_numpy(path, kind, limit)
        except (ScanError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as e:  # a parser choked on malformed input: one line, not a traceback
            raise ScanError(path, f"cannot read as {kind}: {type(e).__name__}: {first_line(e, default='')}") from None
    if modality:
        scan.modality = modality.upper()
        scan.unit = "HU" if scan.modality == "CT" else ""
    _check_values(path, scan)
    return scan


def detect_format(path: Path) -> str:
    """One of dicom-folder, dicomdir, dicom, nifti, image, npy, npz — by content, not name."""
    if not path.exists():
        raise ScanError(path, "no such file or folder")
    if path.is_dir():
        return "dicom-folder"
    size = path.stat().st_size
    if size == 0:
        raise ScanError(path, "is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(1024)
    if head[128:132] == b"DICM":
        return "dicomdir" if path.name.upper() == "DICOMDIR" else "dicom"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _is_nifti(head) or (head[:2] == b"\x1f\x8b" and _is_nifti(_gunzip_head(path))):
        return "nifti"
    if is_dicom_file(path):  # .dcm without preamble: let pydicom try
        return "dicom"
    suffix = "".join(path.suffixes[-2:]).lower()
    hint = ""
    if path.suffix.lower() in IMAGE_EXTENSIONS or suffix in (".nii", ".nii.gz") or path.suffix.lower() in (".npy", ".npz"):
        looks = "text" if _looks_like_text(head) else "unrecognised bytes"
        hint = f" (named {path.suffix} but its content is {looks})"
    raise ScanError(path, f"not a recognised scan format{hint}; expected DICOM, NIfTI, PNG, JPEG, BMP, TIFF, NPY or NPZ")


def _is_nifti(head: bytes) -> bool:
    if len(head) < 348:
        return False
    n1 = int.from_bytes(head[:4], "little") in (348, 348 << 24) and head[344:347] in (b"n+1", b"ni1")
    n2 = len(head) >= 540 and int.from_bytes(head[:4], "little") in (540, 540 << 24) and head[4:7] in (b"n+2", b"ni2")
    return n1 or n2


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read(544)
    except (OSError, EOFError):
        return b""


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _inflate(path: Path) -> bytes:
    """The whole gzip file decompressed; ISA-L's igzip (package ``isal``) when present, else zlib."""
    try:
        from isal.igzip import decompress
    except ImportError:  # isal has wheels for the common platforms; elsewhere zlib does the same work
        from gzip import decompress
    return decompress(path.read_bytes())


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_bytes(path: Path, shape, limit: int) -> None:
    shape = [int(s) for s in shape]
    if any(s <= 0 for s in shape):
        raise ScanError(path, f"has a zero-sized dimension (shape {shape})")
    needed = int(np.prod(shape, dtype=np.float64)) * 4
    if needed > limit:
        raise ScanError(path, f"declares {needed / 2**30:.1f} GiB of voxels (shape {shape}), over the limit of {limit / 2**30:.1f} GiB (raise it with --max-bytes or MEDMLLM_MAX_SCAN_BYTES)")


def _check_values(path: Path, scan: Scan) -> None:
    """All-NaN volumes are an error; a few NaN/inf voxels become the minimum finite value, with a warning."""
    bad = ~np.isfinite(scan.voxels)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    if n_bad == scan.voxels.size:
        raise ScanError(path, "contains no finite values (all NaN or infinite)")
    fill = float(scan.voxels[~bad].min())
    scan.voxels[bad] = fill
    scan.warnings.append(f"{n_bad} NaN/infinite voxels set to the minimum value {fill:g}")


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, volume: int | None, limit: int) -> Scan:
    import nibabel as nib

    img = nib.load(str(path))
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2:
        raise ScanError(path, f"has {len(shape)} dimension(s); a scan needs 2 to 4")
    shape3 = shape + (1,) * (3 - len(shape)) if len(shape) < 3 else shape
    extra = shape3[3:]
    if any(s != 1 for s in extra[1:]):
        raise ScanError(path, f"has {len(shape)} dimensions {list(shape)}; only 3D or 4D NIfTI is supported")
    n_volumes = extra[0] if extra else 1
    if n_volumes > 1 and volume is None:
        raise ScanError(path, f"is 4D with {n_volumes} volumes; choose one with --volume N (0..{n_volumes - 1})")
    if volume is not None and not 0 <= volume < n_volumes:
        raise ScanError(path, f"has {n_volumes} volume(s); --volume {volume} is out of range")
    _check_bytes(path, shape3[:3], limit)

    if len(shape) > 3:  # index the one volume: the proxy reads only that part of the file
        data = np.asarray(img.dataobj[(slice(None),) * 3 + (volume or 0,) + (0,) * (len(shape) - 4)])
    else:
        if _is_gzip(path):  # inflate with ISA-L when installed: ~1.6x faster than zlib on a CT
            img = type(img).from_bytes(_inflate(path))
        data = np.asarray(img.dataobj).reshape(shape3)
    affine = img.affine
    # nibabel is (i, j, k); our readers hand (k, j, i) views to the common reorientation.
    data_kji = data.transpose(2, 1, 0)
    affine_kji = affine[:, [2, 1, 0, 3]]
    voxels, spacing, orientation = to_canonical(data_kji, affine_kji)
    warnings = []
    modality, unit = "OT", ""
    if data.size and -1100 <= float(np.min(data)) <= -900:
        # NIfTI has no modality field; air at about -1024 is the signature of CT in Hounsfield units.
        modality, unit = "CT", "HU"
        warnings.append("modality guessed from intensities (air at about -1024): CT in HU; pass --modality to override")
    header = img.header
    description = header.get("descrip")
    description = description.item().decode("latin-1", "replace").strip("\x00 ") if description is not None else ""
    return Scan(
        voxels=np.ascontiguousarray(voxels, dtype=np.float32),
        spacing=spacing,
        modality=modality,
        orientation=orientation,
        series_description=description,
        source=str(path),
        unit=unit,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- 2D images


def _read_image(path: Path, limit: int) -> Scan:
    from PIL import Image, ImageSequence

    with Image.open(path) as img:
        width, height = img.size
        n_frames = getattr(img, "n_frames", 1)
        _check_bytes(path, (n_frames, height, width, 3 if img.mode not in ("L", "I", "I;16", "I;16B", "F", "1") else 1), limit)
        frames = [_image_array(frame) for frame in ImageSequence.Iterator(img)]
    if len({f.shape for f in frames}) > 1:
        raise ScanError(path, "pages of this TIFF have different sizes; it is not one volume")
    data = np.stack(frames)
    if data.ndim == 4 and np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 0], data[..., 2]):
        data = data[..., 0]  # grey stored as RGB: one channel
    return Scan(voxels=data.astype(np.float32), modality="OT", source=str(path))


def _image_array(frame) -> np.ndarray:
    if frame.mode in ("L", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(frame)
    if frame.mode == "1":
        return np.asarray(frame.convert("L"))
    return np.asarray(frame.convert("RGB"))  # palette, RGBA, CMYK, LA ... -> RGB; alpha dropped


# --------------------------------------------------------------------------- NumPy


def _npy_shape(f) -> tuple[int, ...]:
    """The shape an NPY header declares, read before the array is allocated."""
    version = np.lib.format.read_magic(f)
    header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return header(f)[0]


def _read_numpy(path: Path, kind: str, limit: int) -> Scan:
    """NPY: an array (H, W), (D, H, W) or (D, H, W, C). NPZ: the array under ``voxels``, ``image``
    or the only array, and an optional ``spacing`` (z, y, x). Pickles are refused."""
    spacing = (1.0, 1.0, 1.0)
    if kind == "npy":
        with open(path, "rb") as f:
            _check_bytes(path, _npy_shape(f) or (1,), limit)
        arr = np.load(path, allow_pickle=False)
    else:
        with zipfile.ZipFile(path) as zf:
            names = [n.removesuffix(".npy") for n in zf.namelist()]
        key = next((k for k in ("voxels", "image") if k in names), None)
        arrays = [n for n in names if n != "spacing"]
        if key is None:
            if len(arrays) != 1:
                raise ScanError(path, f"NPZ holds arrays {names}; name the scan 'voxels' or keep only one")
            key = arrays[0]
        with np.load(path, allow_pickle=False) as npz:
            with npz.zip.open(key + ".npy") as f:
                _check_bytes(path, _npy_shape(f) or (1,), limit)
            arr = npz[key]
            if "spacing" in npz.files:
                spacing = tuple(float(s) for s in np.asarray(npz["spacing"]).ravel()[:3])
    if arr.dtype.kind not in "biuf":
        raise ScanError(path, f"holds {arr.dtype} values; a scan needs numbers")
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3)):
        raise ScanError(path, f"has shape {list(arr.shape)}; expected (H, W), (D, H, W) or (D, H, W, C) with C = 1 or 3")
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    _check_bytes(path, arr.shape, limit)
    return Scan(voxels=arr.astype(np.float32), spacing=spacing, modality="OT", source=str(path))
