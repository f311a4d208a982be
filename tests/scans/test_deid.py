"""De-identification (PS3.15 Annex E Basic Profile) on pydicom's real test files.

The identified fixtures put known, distinctive identifiers (long enough never to occur by chance in
pixel bytes or random UIDs) everywhere a real file may carry them: top level, nested sequences,
private tags, descriptions, the file name.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from medmllm.errors import ScanError
from medmllm.scans.deid import TABLE_E_1_1, Deidentifier, DeidSummary, deidentify

CT = get_testdata_file("CT_small.dcm", download=False)
MR = get_testdata_file("MR_small.dcm", download=False)
CR = get_testdata_file("RG1_UNCR.dcm", download=False)
MULTIFRAME = get_testdata_file("emri_small.dcm", download=False)
TREE = Path(get_testdata_file("DICOMDIR", download=False)).parent

IDENTIFIERS = {
    "PatientName": "Doeville^Janetha^Quincy",
    "PatientID": "PID-98765-XQ",
    "PatientBirthDate": "19471230",
    "OtherPatientIDs": "OTHERID-4242",
    "InstitutionName": "Saint Examplia Hospital",
    "InstitutionAddress": "17 Nowhere Boulevard Springfield",
    "AccessionNumber": "ACC5551234",
    "ReferringPhysicianName": "Welbyson^Marcus",
    "PerformingPhysicianName": "Housemann^Gregorius",
    "OperatorsName": "Technova^Tinabelle",
    "StationName": "CTSTATION77",
    "PatientAddress": "99 Secretive Lane",
    "StudyID": "STUDY-31337",
    "DeviceSerialNumber": "SN-8675309",
    "ImageComments": "Scanned for Janetha Doeville",
}
NESTED_NAME = "Nestedname^Hiddenperson"  # in a sequence the table does not list
PRIVATE_VALUE = "PRIVATE-PID-98765"
GEOMETRY = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "Rows", "Columns", "NumberOfFrames", "RescaleSlope", "RescaleIntercept",
    "BitsAllocated", "BitsStored", "PixelRepresentation", "PhotometricInterpretation",
    "SamplesPerPixel", "WindowCenter", "WindowWidth", "SOPClassUID", "Modality",
]  # fmt: skip
TABLE_UIDS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"]


def _identified(path: str, sop_uid: str | None = None, referenced: str | None = None) -> Dataset:
    """A real file with known identifiers added everywhere they may hide."""
    ds = dcmread(path)
    for keyword, value in IDENTIFIERS.items():
        setattr(ds, keyword, value)
    ds.SeriesDescription = "Lung 5.0 mm Janetha Doeville"
    ds.StudyDescription = "Chest PID-98765-XQ"
    ds.AcquisitionDateTime = "20040119072730.123+0100"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
    region.ReferringPhysicianName = NESTED_NAME  # Z inside an unlisted sequence: recursion needed
    region.ContentDate = "20040119"
    ds.AnatomicRegionSequence = Sequence([region])
    if referenced:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = referenced
        ds.ReferencedImageSequence = Sequence([ref])
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", PRIVATE_VALUE)
    ds.add_new(0x60000010, "US", ds.Rows)  # overlay plane
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 8)
    ds.add_new(0x50000005, "US", 2)  # curve
    if sop_uid:
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return ds


@pytest.fixture
def series(tmp_path) -> list[Path]:
    """Two identified CT files of one series, the second referencing the first."""
    folder = tmp_path / "in" / "Doeville_Janetha"
    folder.mkdir(parents=True)
    first_uid, second_uid = generate_uid(), generate_uid()
    paths = [folder / "Doeville_Janetha_1.dcm", folder / "Doeville_Janetha_2.dcm"]
    _identified(CT, first_uid).save_as(paths[0])
    second = _identified(CT, second_uid, referenced=first_uid)
    second.InstanceNumber = 2
    second.save_as(paths[1])
    return paths


def _instances(folder: Path):
    """(path, dataset) of every DICOM file under ``folder``, DICOMDIRs included, without pixels."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            try:
                yield path, dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:  # the tree holds README files too
                pass


def _all_elements(ds: Dataset):
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _all_elements(item)


def _leftovers(original: Dataset, new: Dataset, skip_times: bool, path: str = "") -> list[str]:
    """Paths of Table E.1-1 elements of ``original`` that still hold their value in ``new``."""
    bad = []
    for elem in original:
        if elem.tag.is_private:
            continue
        code = TABLE_E_1_1.get(elem.tag)
        out = new.get(elem.tag)
        where = f"{path}/{elem.keyword or elem.tag}"
        if elem.VR == "SQ":
            if code and code != "X/Z/U*" and elem.value and out is not None and len(out.value):
                bad.append(where)  # a sequence coded X, Z or D keeps no items
            elif out is not None:
                for i, (old_item, new_item) in enumerate(zip(elem.value, out.value)):
                    bad += _leftovers(old_item, new_item, skip_times, f"{where}[{i}]")
        elif code and not elem.is_empty and not (skip_times and elem.VR == "TM"):
            bad += [where] if out is not None and not out.is_empty and out.value == elem.value else []
    return bad


# --- the table ---------------------------------------------------------------------------------


def test_table_holds_the_2024b_basic_profile():
    assert len(TABLE_E_1_1) == 617  # + the curve / overlay repeating groups, handled in code
    expected = {
        "PatientName": "Z", "PatientID": "Z/D", "PatientBirthDate": "Z", "AccessionNumber": "Z",
        "InstitutionName": "X/Z/D", "ReferringPhysicianName": "Z", "StudyInstanceUID": "U",
        "SOPInstanceUID": "U", "ReferencedSOPInstanceUID": "U", "MediaStorageSOPInstanceUID": "U",
        "SeriesDescription": "X", "StudyDescription": "X", "StudyDate": "Z", "SeriesDate": "X/D",
        "AcquisitionDate": "X/Z", "ContentDate": "Z/D", "ReferencedImageSequence": "X/Z/U*",
        "OtherPatientIDsSequence": "X", "PatientAge": "X",
    }  # fmt: skip
    for keyword, code in expected.items():
        assert TABLE_E_1_1[tag_for_keyword(keyword)] == code, keyword


@pytest.mark.parametrize("dates", ["shift", "remove"])
@pytest.mark.parametrize("path", [CT, MR, CR, MULTIFRAME])
def test_no_table_attribute_keeps_its_value(path, dates):
    original = _identified(path, referenced=generate_uid())
    new = Deidentifier(salt="s", dates=dates, keep_descriptions=False).deidentify_dataset(original)
    # Times of day are kept when shifting whole days (documented); everything else must change.
    assert _leftovers(original, new, skip_times=dates == "shift") == []
    assert new.file_meta.MediaStorageSOPInstanceUID != original.file_meta.MediaStorageSOPInstanceUID


def test_deidentify_dataset_leaves_its_input_alone():
    original = _identified(CT)
    before = original.PatientName, original.SOPInstanceUID, len(original)
    Deidentifier().deidentify_dataset(original)
    assert (original.PatientName, original.SOPInstanceUID, len(original)) == before


# --- no identifier survives ------------------------------------------------------------------


def test_no_identifier_string_in_the_output_bytes(series, tmp_path):
    out = tmp_path / "out"
    summary = deidentify(series[0].parent, out, salt="s")
    assert summary.files_written == 2
    needles = set(IDENTIFIERS.values()) | {PRIVATE_VALUE, NESTED_NAME}
    for name in (*IDENTIFIERS["PatientName"].split("^"), *NESTED_NAME.split("^")):
        needles.add(name)
    originals = [dcmread(p) for p in series]
    needles |= {str(ds.get(k)) for ds in originals for k in TABLE_UIDS}
    for path in out.rglob("*.dcm"):
        data = path.read_bytes()
        found = [n for n in needles if n.encode() in data or n.upper().encode() in data]
        assert found == [], path.name
        assert "Doeville" not in path.name and "Janetha" not in path.name
    assert not any(n in str(summary) for n in needles)


def test_descriptions_kept_but_cleaned(series):
    ds = dcmread(series[0])
    kept = Deidentifier(salt="s").deidentify_dataset(ds)
    assert kept.SeriesDescription == "Lung 5.0 mm"
    assert kept.StudyDescription == "Chest"
    dropped = Deidentifier(salt="s", keep_descriptions=False).deidentify_dataset(ds)
    assert "SeriesDescription" not in dropped and "StudyDescription" not in dropped


def test_private_tags_curves_and_overlays_are_gone(series):
    new = Deidentifier().deidentify_dataset(dcmread(series[0]))
    elements = list(_all_elements(new))
    assert not [e for e in elements if e.tag.is_private]
    assert not [e for e in elements if e.tag.group & 0xFF00 in (0x5000, 0x6000)]
    assert new.AnatomicRegionSequence[0].CodeValue == "T-D3000"  # unlisted content survives
    assert new.AnatomicRegionSequence[0].ReferringPhysicianName == ""  # listed content, nested


def test_marks_the_dataset_as_deidentified(series):
    new = Deidentifier().deidentify_dataset(dcmread(series[0]))
    assert new.PatientIdentityRemoved == "YES"
    assert new.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [item.CodeValue for item in new.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert all(len(text) <= 64 for text in new.DeidentificationMethod)


# --- pixels and geometry -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [CT, MR, CR, MULTIFRAME])
def test_pixels_and_geometry_unchanged(path, tmp_path):
    out = tmp_path / "out.dcm"
    Deidentifier(salt="s").deidentify_file(path, out)
    before, after = dcmread(path), dcmread(out)
    assert after.PixelData == before.PixelData
    assert after.file_meta.TransferSyntaxUID == before.file_meta.TransferSyntaxUID
    for keyword in GEOMETRY:
        assert after.get(keyword) == before.get(keyword), keyword
    assert (after.pixel_array == before.pixel_array).all()


# --- UIDs --------------------------------------------------------------------------------------


def test_uids_consistent_within_a_series(series, tmp_path):
    deid = Deidentifier(salt="s")
    outs = [tmp_path / "a.dcm", tmp_path / "b.dcm"]
    for src, dst in zip(series, outs):
        deid.deidentify_file(src, dst)
    (a, b), (oa, ob) = [dcmread(p) for p in outs], [dcmread(p) for p in series]
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert a.get(keyword) == b.get(keyword) == deid.new_uid(oa.get(keyword))
    assert a.SOPInstanceUID != b.SOPInstanceUID
    for new, old in ((a, oa), (b, ob)):
        assert (
            new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID == deid.new_uid(old.SOPInstanceUID)
        )
        uid = UID(new.SOPInstanceUID)
        assert uid.is_valid and uid.startswith("2.25.")
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == ob.SOPClassUID  # not an instance UID


def test_same_salt_same_output_other_salt_other(series, tmp_path):
    def run(salt, name):
        deidentify(series[0].parent, tmp_path / name, salt=salt)
        files = sorted((tmp_path / name).rglob("*.dcm"))
        return [p.name for p in files], [dcmread(p).PatientID for p in files]

    names_1, ids_1 = run("salt-1", "a")
    names_2, ids_2 = run("salt-1", "b")
    names_3, ids_3 = run("salt-2", "c")
    assert names_1 == names_2 and ids_1 == ids_2
    assert not set(names_1) & set(names_3) and not set(ids_1) & set(ids_3)
    assert len(set(ids_1)) == 1  # one patient, one pseudonym


@settings(max_examples=60, deadline=None)
@given(patient_id=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12))
def test_pseudonym_never_contains_the_original(patient_id):
    ds = Dataset()
    ds.PatientID, ds.PatientName = patient_id, patient_id
    new = Deidentifier(salt="s").deidentify_dataset(ds)
    assert new.PatientID == str(new.PatientName)
    assert patient_id.strip().upper() not in new.PatientID.upper()


# --- dates -------------------------------------------------------------------------------------


def _day(value: str) -> date:
    return date(int(value[:4]), int(value[4:6]), int(value[6:8]))


def test_dates_shift_by_one_offset_per_patient(tmp_path):
    salt = "s"
    deidentify(TREE, tmp_path / "out", salt=salt)
    deid = Deidentifier(salt=salt)
    originals = {deid.new_uid(ds.SOPInstanceUID): ds for _, ds in _instances(TREE) if "SOPInstanceUID" in ds}
    offsets: dict[str, set[int]] = {}
    pseudonyms: dict[str, set[str]] = {}
    study_days: dict[str, set[tuple[date, date]]] = {}
    for path in (tmp_path / "out").rglob("*.dcm"):
        new = dcmread(path, stop_before_pixels=True)
        old = originals[new.SOPInstanceUID]
        old_day, new_day = _day(old.StudyDate), _day(new.StudyDate)
        offsets.setdefault(old.PatientID, set()).add((new_day - old_day).days)
        pseudonyms.setdefault(old.PatientID, set()).add(new.PatientID)
        study_days.setdefault(old.PatientID, set()).add((old_day, new_day))
        assert new.get("StudyTime") == old.get("StudyTime")  # whole days: times of day are kept
        if old.get("ContentDate"):
            assert (_day(new.ContentDate) - _day(old.ContentDate)).days == (new_day - old_day).days
    assert len(offsets) == 3
    for patient, shift in offsets.items():
        assert len(shift) == 1, patient
        assert -3650 <= shift.pop() <= -365
        assert len(pseudonyms[patient]) == 1
    assert len({p for ids in pseudonyms.values() for p in ids}) == 3  # patients stay apart
    pairs = sorted(study_days["98890234"])  # two studies of one patient, 2001 and 2003
    assert len({old for old, _ in pairs}) == 2
    assert [new for _, new in pairs] == sorted(new for _, new in pairs)


def test_datetime_shifted_with_its_time_kept(series):
    deid = Deidentifier(salt="s")
    new = deid.deidentify_dataset(dcmread(series[0]))
    old_day, new_day = _day("20040119"), _day(new.AcquisitionDateTime)
    assert new.AcquisitionDateTime[8:] == "072730.123"  # time kept, the +0100 zone dropped
    assert (new_day - old_day).days == (_day(new.StudyDate) - _day(dcmread(series[0]).StudyDate)).days
    assert new.PatientBirthDate == ""  # never shifted: emptied


def test_dates_remove_empties_every_date_and_time(series):
    new = Deidentifier(dates="remove").deidentify_dataset(dcmread(series[0]))
    dated = [e for e in _all_elements(new) if e.VR in ("DA", "DT", "TM")]
    assert dated and all(e.is_empty for e in dated)
    assert new.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in new.DeidentificationMethodCodeSequence] == ["113100"]


def test_unknown_dates_option_refused():
    with pytest.raises(ValueError, match="shift"):
        Deidentifier(dates="jitter")


# --- files and folders -------------------------------------------------------------------------


def _dicom_instances(folder: Path, deid: Deidentifier | None = None) -> dict[str, int]:
    """"StudyUID/SeriesUID" -> number of DICOM instances (not DICOMDIRs), read independently.

    With ``deid``, the original UIDs are mapped to the new ones it gives.
    """
    counts: dict[str, int] = {}
    for _path, ds in _instances(folder):
        if "SOPInstanceUID" in ds and "DirectoryRecordSequence" not in ds:
            study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
            if deid is not None:
                study, series = deid.new_uid(study), deid.new_uid(series)
            counts[f"{study}/{series}"] = counts.get(f"{study}/{series}", 0) + 1
    return counts


def test_folder_tree_grouped_by_new_uids_one_output_per_instance(tmp_path):
    out = tmp_path / "out"
    summary = deidentify(TREE, out, salt="s")
    expected = _dicom_instances(TREE, Deidentifier(salt="s"))
    assert summary.files_written == sum(expected.values()) == 81
    assert summary.files_skipped == {"DICOMDIR": 8, "not DICOM": 2}
    assert isinstance(summary, DeidSummary) and summary.skipped_total == 10
    written = {}
    original_uids = {str(ds.SOPInstanceUID) for _, ds in _instances(TREE) if "SOPInstanceUID" in ds}
    for path in out.rglob("*"):
        if path.is_file():
            assert re.fullmatch(r"2\.25\.\d+\.dcm", path.name), path.name
            assert not any(uid in path.name for uid in original_uids)
            ds = dcmread(path)
            assert ds.PatientIdentityRemoved == "YES"
            rel = str(path.parent.relative_to(out))
            written[rel] = written.get(rel, 0) + 1
    assert written == expected
    # Input folder names (here patient IDs such as 77654033) never reach the output paths.
    input_names = {p.name for p in TREE.rglob("*") if p.is_dir()}
    assert input_names and not any(part in input_names for p in out.rglob("*") for part in p.relative_to(out).parts)


def test_non_dicom_and_truncated_files_skipped_in_a_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "notes.txt").write_text("not an image")
    data = Path(CT).read_bytes()
    (src / "cut.dcm").write_bytes(data[:-1000])
    (src / "whole.dcm").write_bytes(data)
    (src / "copy.dcm").write_bytes(data)  # same SOP Instance UID as whole.dcm
    summary = deidentify(src, tmp_path / "out")
    assert summary.files_written == 1
    assert summary.files_skipped == {"not DICOM": 1, "unreadable": 1, "duplicate SOP Instance UID": 1}


def test_single_file_to_file_and_into_folder(tmp_path):
    summary = deidentify(MR, tmp_path / "one.dcm", salt="s")
    assert summary.files_written == 1 and (tmp_path / "one.dcm").is_file()
    folder = tmp_path / "folder"
    folder.mkdir()
    deidentify(MR, folder, salt="s")
    (written,) = list(folder.iterdir())
    assert written.name == dcmread(tmp_path / "one.dcm").SOPInstanceUID + ".dcm"


def test_output_inside_or_equal_to_input_refused(series, tmp_path):
    src = series[0].parent
    for dst in (src, src / "out", src / "a" / "b"):
        with pytest.raises(ScanError, match="inside"):
            deidentify(src, dst)
    with pytest.raises(ScanError, match="input file"):
        deidentify(series[0], series[0])
    assert sorted(src.iterdir()) == sorted(series)  # nothing written into the input


def test_user_errors_raise_scan_error(tmp_path):
    with pytest.raises(ScanError, match="does not exist"):
        deidentify(tmp_path / "missing", tmp_path / "out")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ScanError, match="not a DICOM file"):
        deidentify(text, tmp_path / "out.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(Path(CT).read_bytes()[:-1000])
    with pytest.raises(ScanError, match="could not be read"):
        deidentify(cut, tmp_path / "out.dcm")
    with pytest.raises(ScanError, match="DICOMDIR"):
        deidentify(TREE / "DICOMDIR", tmp_path / "out.dcm")
    assert not (tmp_path / "out.dcm").exists()


def test_failed_write_leaves_no_file_and_keeps_earlier_output(series, tmp_path, monkeypatch):
    out = tmp_path / "out"
    deidentify(series[0].parent, out, salt="s")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken_save(self, f, **kwargs):
        with open(f, "wb") as fh:  # the writer is handed a temporary path
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Dataset, "save_as", broken_save)
    with pytest.raises(OSError, match="disk full"):
        deidentify(series[0].parent, out, salt="s")  # would overwrite the same names
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(OSError, match="disk full"):
        deidentify(series[0], tmp_path / "new" / "one.dcm")
    assert [p for p in (tmp_path / "new").rglob("*") if p.is_file()] == []


def test_in_memory_dataset_without_file_meta():
    ds = Dataset()
    ds.PatientName, ds.SOPInstanceUID = "Doeville^Janetha", generate_uid()
    new = Deidentifier().deidentify_dataset(ds)
    assert "Doeville" not in str(new.PatientName) and new.SOPInstanceUID != ds.SOPInstanceUID
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert Deidentifier().deidentify_dataset(ds).file_meta.MediaStorageSOPInstanceUID.startswith("2.25.")
