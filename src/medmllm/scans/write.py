"""Writing scans: NIfTI for prepared volumes, DICOM series for tests and synthetic data.

Every writer is atomic: it writes a temporary file beside the target and renames it, so a
crash never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from medmllm.scans.orient import canonical_affine
from medmllm.scans.scan import Scan


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside ``target`` (same suffixes); rename it to ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:  # on disk before it takes the real name
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_nifti(scan: Scan, path: str | Path) -> Path:
    """Write ``scan`` as NIfTI (x=W, y=H, z=D) with a RAS+ affine from its spacing.

    Reading the file back with `medmllm.scans.read` gives the same voxels and spacing.
    """
    import nibabel as nib

    if scan.channels != 1:
        raise ValueError("write_nifti takes grey scans; convert colour images first")
    data = np.ascontiguousarray(scan.voxels.transpose(2, 1, 0))
    img = nib.Nifti1Image(data, canonical_affine(scan.spacing))
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = scan.series_description[:79].encode("ascii", "replace")
    path = Path(path)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def write_dicom_series(
    voxels: np.ndarray,
    spacing: tuple[float, float, float],
    out_dir: str | Path,
    *,
    modality: str = "CT",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    series_description: str = "",
    acquisition_datetime: datetime | None = None,
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    file_names: list[str] | None = None,
    patient_name: str = "ANONYMOUS",
    patient_id: str = "ANON",
    contrast_agent: str | None = None,
    series_uid: str | None = None,
) -> list[Path]:
    """Write a canonical ``(D, H, W)`` volume as one axial DICOM series (one file per slice).

    Stored values are ``round((voxels - intercept) / slope)`` as signed 16-bit, so that reading
    applies the rescale back. ``file_names`` (one per slice) lets tests shuffle names on purpose.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    depth, rows, cols = voxels.shape
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = file_names or [f"slice_{k:04d}.dcm" for k in range(depth)]
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    study_uid, series_uid, frame_uid = generate_uid(), series_uid or generate_uid(), generate_uid()
    when = acquisition_datetime or datetime(2020, 1, 1, 12, 0, 0)
    stored = np.round((voxels - rescale_intercept) / rescale_slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("values do not fit signed 16-bit with this slope and intercept")
    stored = stored.astype(np.int16)
    sz, sy, sx = spacing
    paths = []
    for k in range(depth):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out_dir / names[k]), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality = modality
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.SeriesDescription = series_description
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = when.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = when.strftime("%H%M%S")
        ds.SeriesNumber, ds.InstanceNumber = 1, depth - k  # reversed on purpose: order must come from positions
        if contrast_agent:
            ds.ContrastBolusAgent = contrast_agent
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * sz)]
        ds.PixelSpacing = [float(sy), float(sx)]
        ds.SliceThickness = float(sz)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = rescale_slope, rescale_intercept
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        path = out_dir / names[k]
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths
