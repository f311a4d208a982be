"""Uploaded studies: type check, safe unzip, de-identification, storage, slices, feature cache.

On disk, under the server's data dir::

    studies/<id>/scan.nii.gz                  the voxels (grey; colour images: scan.npz), no identifier
    studies/<id>/study.json                   metadata without identifiers (see `StudyStore.create`)
    studies/<id>/features-<model>.safetensors the model's visual tokens (L, E) for this study

``<id>`` is a random uuid4 in hex (32 characters); every id from a URL is checked against that
form before it touches a path. Upload file names are never used: a zip's members are extracted
under numbered names after their names have been checked (no absolute paths, no ``..``, no links).

De-identification: DICOM (one file or a zipped series) goes through `medmllm.scans.deidentify`
(PS3.15 Basic Profile) before it is read; then only the pixel volume and safe fields are kept:
modality, shape, spacing, unit, contrast, the (cleaned) series description. The acquisition date,
even shifted, is dropped: the exam time is kept only when the uploader passes it explicitly (form
field ``time``), and then it is theirs to choose (a real date, or one relative to the patient's
first visit). NIfTI and image uploads carry no patient fields that medmllm reads; their
description header is not kept.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time as time_module
import uuid
import zipfile
from collections import OrderedDict
from datetime import date, datetime
from pathlib import Path

import numpy as np

from medmllm.errors import MedMLLMError, ScanError
from medmllm.serve.limits import Limits

STUDY_ID = re.compile(r"[0-9a-f]{32}")


class UploadError(MedMLLMError):
    """An upload the server refuses; ``status``: 415 unsupported type, 422 unreadable or unsafe, 404 unknown id."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def sniff(path: Path) -> str | None:
    """The upload's kind by its first bytes: zip, dicom, nifti, image; None when none of them."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return "image"
    if head.startswith(b"\x1f\x8b"):  # gzip: only a gzipped NIfTI is accepted
        import gzip

        try:
            with gzip.open(path, "rb") as f:
                head = f.read(544)
        except (OSError, EOFError):
            return None
    if len(head) >= 348 and int.from_bytes(head[:4], "little") == 348 and head[344:347] in (b"n+1", b"ni1"):
        return "nifti"
    if len(head) >= 540 and int.from_bytes(head[:4], "little") == 540 and head[4:7] in (b"n+2", b"ni2"):
        return "nifti"
    return None


def unsafe_member_name(name: str) -> bool:
    """A zip member name that could write outside the extraction folder."""
    parts = re.split(r"[\\/]", name)
    return name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\0" in name


def extract_zip(zip_path: Path, dest: Path, limits: Limits) -> int:
    """Extract the regular files of a zip into ``dest`` as ``00000``, ``00001``, ...; returns the count.

    Refused (`UploadError` 422): a member name with ``..``, an absolute path or a drive, a symbolic
    link, an encrypted member, more than ``limits.max_zip_members`` files, more than
    ``limits.max_unzipped_bytes`` uncompressed (counted while inflating, not trusted from headers).
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UploadError(422, f"the zip cannot be read: {e}") from None
    with archive:
        members = archive.infolist()
        for info in members:
            if unsafe_member_name(info.filename):
                raise UploadError(422, "the zip has a member whose name leaves its folder ('..' or an absolute path); refused")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UploadError(422, "the zip holds a symbolic link; refused")
            if info.flag_bits & 0x1:
                raise UploadError(422, "the zip is encrypted; upload it without a password")
        files = [info for info in members if not info.is_dir()]
        if len(files) > limits.max_zip_members:
            raise UploadError(422, f"the zip holds {len(files)} files, more than the limit of {limits.max_zip_members}")
        if sum(info.file_size for info in files) > limits.max_unzipped_bytes:
            raise UploadError(422, f"the zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes")
        dest.mkdir(parents=True, exist_ok=True)
        total = 0
        for k, info in enumerate(files):
            with archive.open(info) as src, open(dest / f"{k:05d}", "wb") as out:
                while chunk := src.read(1 << 20):
                    total += len(chunk)
                    if total > limits.max_unzipped_bytes:
                        raise UploadError(422, f"the zip unpacks to more than the limit of {limits.max_unzipped_bytes} bytes")
                    out.write(chunk)
    return len(files)


def _suffix(path: Path, kind: str) -> str:
    if kind == "image":
        with open(path, "rb") as f:
            return ".png" if f.read(4) == b"\x89PNG" else ".jpg"
    with open(path, "rb") as f:
        return ".nii.gz" if f.read(2) == b"\x1f\x8b" else ".nii"


def _named_copy(source: Path, target: Path) -> Path:
    """``source`` under the name ``target``: a hard link when possible, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target


def parse_exam_time(text: str) -> str:
    """``YYYY-MM-DD`` or ``YYYY-MM-DD HH:MM`` (ISO 8601), normalised; else `UploadError` 422."""
    text = text.strip()
    try:
        if len(text) <= 10:
            return date.fromisoformat(text).isoformat()
        return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        raise UploadError(422, f"time {text!r} is not a date (YYYY-MM-DD) or date and time (YYYY-MM-DD HH:MM)") from None


class StudyStore:
    """Studies under ``root/studies``; thread-safe (handlers call it from a thread pool)."""

    def __init__(self, root: str | Path, limits: Limits | None = None, cached_scans: int = 4):
        self.root = Path(root) / "studies"
        self.root.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self._scans: OrderedDict[str, object] = OrderedDict()
        self._cached_scans = cached_scans
        self._lock = threading.Lock()

    def folder(self, study_id: str) -> Path:
        """The study's folder; `UploadError` 404 for a malformed or unknown id."""
        if not isinstance(study_id, str) or not STUDY_ID.fullmatch(study_id):
            raise UploadError(404, "no such study (ids are 32 lowercase hex digits)")
        folder = self.root / study_id
        if not (folder / "study.json").is_file():
            raise UploadError(404, f"no such study: {study_id}")
        return folder

    # -- upload ---------------------------------------------------------------------------------

    def create(self, upload: Path, *, time: str | None = None, series: str | None = None, modality: str | None = None) -> dict:
        """Read, de-identify and store an uploaded file; returns the study's metadata.

        Metadata: ``id``, ``object`` ("study"), ``created_at`` (Unix seconds), ``format`` (dicom,
        nifti, image), ``modality``, ``shape`` [D, H, W], ``channels``, ``spacing`` [z, y, x] mm,
        ``unit``, ``contrast``, ``series_description`` (DICOM only, after de-identification),
        ``time`` (only when given), ``display_window`` [level, width] (0.5-99.5 percentiles),
        ``deidentified`` (what was done).
        """
        from medmllm.scans import deidentify, read

        kind = sniff(upload)
        if kind is None:
            raise UploadError(415, "unsupported file type: upload a zipped DICOM series, a DICOM file, NIfTI (.nii, .nii.gz), PNG or JPEG")
        exam_time = parse_exam_time(time) if time else None
        with tempfile.TemporaryDirectory(prefix="medmllm-upload-") as tmp:
            work = Path(tmp)
            try:
                if kind in ("zip", "dicom"):
                    source = work / "raw"
                    if kind == "zip":
                        extract_zip(upload, source, self.limits)
                    else:
                        source.mkdir()
                        shutil.copyfile(upload, source / "00000")
                    summary = deidentify(source, work / "deid")
                    shutil.rmtree(source)
                    if summary.files_written == 0:
                        raise UploadError(422, "no readable DICOM file in the upload")
                    scan = read(work / "deid", series=series, modality=modality)
                    how = "DICOM PS3.15 Basic Profile (medmllm.scans.deidentify); only voxels and safe fields kept"
                else:  # nibabel goes by the file name: give the bytes the name their content has
                    scan = read(_named_copy(upload, work / f"upload{_suffix(upload, kind)}"), modality=modality)
                    how = "only voxels and safe fields kept (the file's description header is dropped)"
            except ScanError as e:
                raise UploadError(422, f"the upload cannot be read: {e.problem}") from None
            return self._store(scan, kind, exam_time, how)

    def _store(self, scan, kind: str, exam_time: str | None, how: str) -> dict:
        from medmllm.scans import Scan
        from medmllm.scans.write import atomic_path, write_nifti

        study_id = uuid.uuid4().hex
        clean = Scan(voxels=scan.voxels, spacing=scan.spacing, modality=scan.modality, orientation=scan.orientation, unit=scan.unit)
        lo, hi = np.percentile(scan.voxels[:: max(1, scan.shape[0] // 32)], [0.5, 99.5])
        meta = {
            "id": study_id,
            "object": "study",
            "created_at": int(time_module.time()),
            "format": kind if kind != "zip" else "dicom",
            "modality": scan.modality,
            "shape": list(scan.shape),
            "channels": scan.channels,
            "spacing": [round(s, 6) for s in scan.spacing],
            "unit": scan.unit,
            "contrast": scan.contrast,
            "series_description": scan.series_description if kind in ("zip", "dicom") else "",
            "time": exam_time,
            "display_window": [round(float(lo + hi) / 2, 3), round(max(float(hi - lo), 1e-6), 3)],
            "deidentified": how,
        }
        staging = self.root / f".{study_id}.partial"  # renamed into place when complete
        staging.mkdir()
        try:
            if clean.channels == 1:
                write_nifti(clean, staging / "scan.nii.gz")
            else:
                with atomic_path(staging / "scan.npz") as tmp, open(tmp, "wb") as f:
                    np.savez(f, voxels=clean.voxels, spacing=np.asarray(clean.spacing))
            (staging / "study.json").write_text(json.dumps(meta, indent=2) + "\n")
            staging.rename(self.root / study_id)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        return meta

    def delete(self, study_id: str) -> None:
        """Remove a study's files (voxels, metadata, cached features)."""
        folder = self.folder(study_id)
        with self._lock:
            self._scans.pop(study_id, None)
        shutil.rmtree(folder)

    # -- reading --------------------------------------------------------------------------------

    def meta(self, study_id: str) -> dict:
        return json.loads((self.folder(study_id) / "study.json").read_text())

    def scan(self, study_id: str):
        """The stored `Scan` (a few recent ones stay in memory for the slice viewer)."""
        from medmllm.scans import read

        folder = self.folder(study_id)
        with self._lock:
            if study_id in self._scans:
                self._scans.move_to_end(study_id)
                return self._scans[study_id]
        path = folder / "scan.nii.gz"
        scan = read(path if path.exists() else folder / "scan.npz")
        scan.modality, scan.unit = self.meta(study_id)["modality"], self.meta(study_id)["unit"]
        scan.source, scan.warnings = "", []
        with self._lock:
            self._scans[study_id] = scan
            while len(self._scans) > self._cached_scans:
                self._scans.popitem(last=False)
        return scan

    def slice_png(self, study_id: str, index: int, window: str | None = None, size: int = 512) -> bytes:
        """Slice ``index`` (0 = most inferior) as PNG bytes, at most ``size`` pixels on its long side,
        in a named window (lung, mediastinum, bone, brain) or else the study's display window."""
        from PIL import Image

        from medmllm.scans import Scan
        from medmllm.scans.preview import mosaic
        from medmllm.scans.windows import WINDOWS

        if window is not None and window not in WINDOWS:
            raise UploadError(422, f"unknown window {window!r}; use one of {', '.join(WINDOWS)}")
        scan = self.scan(study_id)
        if not 0 <= index < scan.shape[0]:
            raise UploadError(404, f"slice {index} is out of range: the study has {scan.shape[0]} slice(s) (0..{scan.shape[0] - 1})")
        one = Scan(voxels=scan.voxels[index : index + 1], spacing=scan.spacing)
        level_width = window or tuple(self.meta(study_id)["display_window"])
        pixels = mosaic(one, window=level_width, tiles=1, tile_size=min(size, max(scan.shape[1:])))
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        return buffer.getvalue()


class FeatureCache:
    """Visual tokens (L, E) per study: an in-memory LRU, and safetensors files beside each study.

    Args:
        store: the `StudyStore` (None: memory only).
        fingerprint: names the model the features belong to (a different model never reads them).
        max_items: studies kept in memory.
    """

    def __init__(self, store: StudyStore | None, fingerprint: str | None, max_items: int = 64):
        self.store = store
        self.fingerprint = fingerprint
        self.max_items = max_items
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()

    def _file(self, study_id: str) -> Path | None:
        if self.store is None or self.fingerprint is None:
            return None
        try:
            return self.store.folder(study_id) / f"features-{self.fingerprint}.safetensors"
        except UploadError:
            return None

    def get(self, study_id: str):
        with self._lock:
            if study_id in self._items:
                self._items.move_to_end(study_id)
                return self._items[study_id]
        path = self._file(study_id)
        if path is not None and path.exists():
            from safetensors.torch import load_file

            tokens = load_file(path)["features"]
            self._remember(study_id, tokens)
            return tokens
        return None

    def put(self, study_id: str, tokens) -> None:
        self._remember(study_id, tokens)
        path = self._file(study_id)
        if path is not None and not path.exists():
            from safetensors.torch import save_file

            from medmllm.scans.write import atomic_path

            with atomic_path(path) as tmp:
                save_file({"features": tokens.detach().cpu().contiguous()}, str(tmp))

    def _remember(self, study_id: str, tokens) -> None:
        with self._lock:
            self._items[study_id] = tokens
            self._items.move_to_end(study_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def forget(self, study_id: str) -> None:
        with self._lock:
            self._items.pop(study_id, None)

    def __contains__(self, study_id: str) -> bool:
        with self._lock:
            if study_id in self._items:
                return True
        path = self._file(study_id)
        return path is not None and path.exists()
