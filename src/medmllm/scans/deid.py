"""De-identify DICOM files: PS3.15 Annex E Basic Application Level Confidentiality Profile.

``deidentify(src, dst)`` copies one DICOM file, or a folder tree of them, to ``dst`` with the
profile applied; ``Deidentifier`` does the same per dataset or file for callers that loop themselves.

What is done, and why
---------------------
- Every attribute of PS3.15 2024b Table E.1-1 gets its action code (``_TABLE_E_1_1`` below), at
  every nesting level. Combined codes resolve to the strictest action that is conformant whatever
  the attribute's Type in the IOD, which this module does not know: ``X/Z`` -> Z, ``X/D``, ``Z/D``
  and ``X/Z/D`` -> D, ``X/Z/U*`` -> keep the sequence and replace the UIDs inside. D replaces a
  non-empty value by a dummy of its VR ("ANONYMIZED", 0, a mapped UID) and leaves empty ones empty,
  so presence survives (a contrast agent was given) but not content. A sequence coded Z or D (or a
  combination) is emptied: the profile defines no generic dummy item, and keeping the items would
  keep the codes and free text in them that the table does not reach.
- UIDs coded U become ``2.25.<n>`` with ``n`` a keyed hash (HMAC-SHA-256) of the salt and the
  original UID, so references inside sequences, the file meta and other files of a study all stay
  consistent, within a run and across runs given the same salt. ``Deidentifier.new_uid`` exposes
  the mapping (to carry labels keyed by SOP Instance UID over to the de-identified files).
- PatientID and PatientName become one pseudonym, a keyed hash of the original PatientID (that is
  allowed by the table's Z and Z/D). It never contains the original ID or name.
- ``dates="shift"``: every DA and DT value, listed in the table or not, moves by a whole number of
  days (between 1 and 10 years back) keyed on the salt and the PatientID, so all files of one
  patient shift together and intervals and order are exact; times of day (TM, the time in DT) are
  kept, and DT time-zone suffixes dropped. This is the "Retain Longitudinal Temporal Information
  With Modified Dates Option" (code 113107). Attributes coded X are still removed, and the birth
  date is always emptied (the age it would give away is removed by the profile too).
  ``dates="remove"``: DA, DT and TM values are emptied (removed where the table says X).
- Private attributes, curves (groups 50xx) and overlays (groups 60xx) are removed. The profile
  names Overlay Data and Overlay Comments only; the whole group goes because an Overlay Plane
  without its data is not conformant. Group length elements go too: they would be wrong.
- The file meta is rebuilt: Media Storage SOP Instance UID = the new SOP Instance UID, the
  transfer syntax kept, the source application entity title and the 128-byte preamble dropped.
- Added: PatientIdentityRemoved "YES", DeidentificationMethod, DeidentificationMethodCodeSequence
  (113100, plus 113107 when shifting) and LongitudinalTemporalInformationModified.
- Kept bit for bit: Pixel Data and everything the table does not list (geometry, rescale, ...).

Deviation from the profile: with ``keep_descriptions=True`` (the default) Study Description and
Series Description, which the table removes (X), are kept, cleaned of any word equal to one of
the file's identifying values (names, IDs, accession number, birth date, institution), because
users select series by them ("Lung 5.0 mm"). This is in the spirit of the "Retain ... Descriptors"
options but not a full Clean Descriptors Option, so code 113105 is not claimed; the
DeidentificationMethod text says so. ``keep_descriptions=False`` follows the table.

Not done: burned-in text in the pixels is not cleaned (``DeidSummary.burned_in_annotation`` counts
files that declare some). Folder names under ``src`` are copied as they are: rename any that
identify someone.

Why no library: dicognito is heuristic (every PN/UI/date anonymised, not the Table E.1-1 actions)
and shifts all dates by one offset per run, not per patient; dicom-anonymizer (KitwareMedical)
transcribes the table but maps UIDs to random ones in a module-global dict (not reproducible with
a salt), overwrites dates with 00010101 instead of shifting, and does not apply the table inside
sequences; deid (pydicom) is driven by a recipe whose default is not Table E.1-1 and pulls in
matplotlib. The table below is PS3.15 2024b Table E.1-1 (617 attributes, plus the curve and
overlay repeating groups), generated from the machine-readable transcription of that edition in
dicom-anonymizer 2.1.0 (BSD-3-Clause, KitwareMedical) and spot-checked against the standard;
re-check it against a newer edition of the standard when updating.

Nothing here logs or prints a value read from a file; pydicom's warnings, which can quote values,
are silenced while reading, de-identifying and writing.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import os
import re
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import get_expected_length
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MediaStorageDirectoryStorage

from medmllm.errors import ScanError
from medmllm.scans.dicom import quiet_pydicom
from medmllm.scans.write import atomic_path

__all__ = ["DeidSummary", "Deidentifier", "deidentify"]

# PS3.15 2024b Table E.1-1, "Basic Prof." column: action code, then the attributes (pydicom
# keywords) that take it. Repeating groups (curves 50xx, overlays 60xx) are handled in code.
_TABLE_E_1_1 = """
X:
    AcquisitionComments AcquisitionProtocolDescription ActualHumanPerformersSequence
    AdditionalPatientHistory AddressTrial AdmissionID AdmittingDate AdmittingDiagnosesCodeSequence
    AdmittingDiagnosesDescription AdmittingTime AffectedSOPInstanceUID Allergies
    AnnotationGroupDescription ApprovalStatusDateTime Arbitrary AssertionExpirationDateTime
    AuthorObserverSequence BeamDescription BolusDescription BranchOfService CalibrationDate
    CalibrationTime CameraOwnerName CassetteID CertifiedTimestamp
    ClinicalTrialProtocolEthicsCommitteeApprovalNumber ClinicalTrialSeriesDescription
    ClinicalTrialSeriesID ClinicalTrialTimePointDescription CommentsOnRadiationDose
    CommentsOnThePerformedProcedureStep CompensatorDescription
    ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianIdentificationSequence
    ContainerComponentID ContainerDescription ContentCreatorIdentificationCodeSequence
    ContrastBolusStartTime ContrastBolusStopTime ContributionDateTime ContributionDescription
    CountryOfResidence CreationDate CreationTime CurrentObserverTrial CurrentPatientLocation CurveDate
    CurveTime CustodialOrganizationSequence DataSetTrailingPadding
    DateOfDocumentOrVerbalTransactionTrial DateOfInstallation DateOfLastCalibration DateOfManufacture
    DateOfSecondaryCapture DateTimeOfLastCalibration DecompositionDescription DerivationDescription
    DeviceDescription DeviceSettingDescription DigitalSignaturesSequence DischargeDate
    DischargeDiagnosisDescription DischargeTime DisplacementReferenceLabel DistributionAddress
    DistributionName DoseReferenceDescription EntityDescription EntityName
    EquipmentFrameOfReferenceDescription EthicsCommitteeApprovalEffectivenessEndDate
    EthicsCommitteeApprovalEffectivenessStartDate EthnicGroup ExpectedCompletionDateTime
    FilterLookupTableDescription FindingsGroupRecordingDateTrial FindingsGroupRecordingTimeTrial
    FixationDeviceDescription FractionGroupDescription FrameComments GPSAltitude GPSAltitudeRef
    GPSAreaInformation GPSDOP GPSDateStamp GPSDestBearing GPSDestBearingRef GPSDestDistance
    GPSDestDistanceRef GPSDestLatitude GPSDestLatitudeRef GPSDestLongitude GPSDestLongitudeRef
    GPSDifferential GPSImgDirection GPSImgDirectionRef GPSLatitude GPSLatitudeRef GPSLongitude
    GPSLongitudeRef GPSMapDatum GPSMeasureMode GPSProcessingMethod GPSSatellites GPSSpeed GPSSpeedRef
    GPSStatus GPSTimeStamp GPSTrack GPSTrackRef GPSVersionID GantryID GeneratorID
    HL7DocumentEffectiveTime HumanPerformerName HumanPerformerOrganization IconImageSequence
    IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments
    Impressions InstanceCoercionDateTime InstanceOriginStatus InstitutionAddress
    InstitutionalDepartmentName InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification
    IntendedFractionStartTime IntendedRecipientsOfResultsIdentificationSequence
    InterpretationApprovalDate InterpretationApprovalTime InterpretationApproverSequence
    InterpretationAuthor InterpretationDiagnosisDescription InterpretationID InterpretationIDIssuer
    InterpretationRecordedDate InterpretationRecordedTime InterpretationRecorder InterpretationText
    InterpretationTranscriber InterpretationTranscriptionDate InterpretationTranscriptionTime
    InterventionDrugStartTime InterventionDrugStopTime IssueDateOfImagingServiceRequest
    IssueTimeOfImagingServiceRequest IssuerOfAdmissionID IssuerOfAdmissionIDSequence
    IssuerOfClinicalTrialProtocolID IssuerOfClinicalTrialSeriesID IssuerOfClinicalTrialSiteID
    IssuerOfClinicalTrialSubjectID IssuerOfClinicalTrialSubjectReadingID
    IssuerOfClinicalTrialTimePointID IssuerOfPatientID IssuerOfServiceEpisodeID
    IssuerOfServiceEpisodeIDSequence LastMenstrualDate LensMake LensModel LensSerialNumber
    LensSpecification LongDeviceDescription MAC MakerNote MedicalAlerts MedicalRecordLocator
    MilitaryRank ModifiedAttributesSequence ModifiedImageDate ModifiedImageDescription ModifiedImageTime
    ModifyingDeviceID MultienergyAcquisitionDescription NameOfPhysiciansReadingStudy
    NamesOfIntendedRecipientsOfResults NetworkID NonconformingDataElementValue
    NonconformingModifiedAttributesSequence ObservationDateTrial ObservationStartDateTime
    ObservationTimeTrial Occupation OrderCallbackPhoneNumber OrderCallbackTelecomInformation
    OrderEnteredBy OrderEntererLocation OriginalAttributesSequence Originator
    OtherClinicalTrialProtocolIDsSequence OtherPatientIDs OtherPatientIDsSequence OtherPatientNames
    OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge PatientBirthName
    PatientBirthTime PatientComments PatientInstitutionResidence PatientInsurancePlanCodeSequence
    PatientMotherBirthName PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
    PatientReligiousPreference PatientSetupPhotoDescription PatientSize PatientState
    PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements
    PatientTreatmentPreparationMethodDescription
    PatientTreatmentPreparationProcedureParameterDescription PatientWeight PerformedLocation
    PerformedProcedureStepDescription PerformedProcedureStepEndDate PerformedProcedureStepEndDateTime
    PerformedProcedureStepEndTime PerformedProcedureStepID PerformedProcedureStepStartDate
    PerformedProcedureStepStartDateTime PerformedProcedureStepStartTime PerformedStationAETitle
    PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
    PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress
    PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation PhysiciansOfRecord
    PhysiciansOfRecordIdentificationSequence PhysiciansReadingStudyIdentificationSequence PlateID
    PositionAcquisitionTemplateDescription PositionAcquisitionTemplateName PreMedication PregnancyStatus
    PrescriptionDescription PresentationCreationDate PresentationCreationTime
    PriorTreatmentDoseDescription ProcedureStepCancellationDateTime ProductExpirationDateTime
    PyramidDescription PyramidLabel ROICreatorSequence ROIDateTime ROIDescription
    ROIGenerationDescription ROIInterpreterSequence ROIObservationDateTime ROIObservationDescription
    ROIObservationLabel RTPlanDescription RTPlanName RadiopharmaceuticalStartDateTime
    RadiopharmaceuticalStartTime RadiopharmaceuticalStopDateTime RadiopharmaceuticalStopTime
    ReasonForOmissionDescription ReasonForRequestedProcedureCodeSequence ReasonForStudy
    ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReasonForVisit
    ReasonForVisitCodeSequence ReceivingAE ReferencedDigitalSignatureSequence
    ReferencedPatientAliasSequence ReferencedPatientPhotoSequence ReferencedPatientSequence
    ReferencedSOPInstanceMACSequence ReferringPhysicianAddress ReferringPhysicianIdentificationSequence
    ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
    RequestedContrastAgent RequestedProcedureComments RequestedProcedureID RequestedProcedureLocation
    RequestedSeriesDescription RequestingAE RequestingPhysician RequestingService
    RespiratoryMotionCompensationTechniqueDescription ResponsibleOrganization ResponsiblePerson
    ResultsComments ResultsDistributionListSequence ResultsID ResultsIDIssuer RetrieveAETitle
    SOPAuthorizationDateTime ScheduledAdmissionDate ScheduledAdmissionTime ScheduledDischargeDate
    ScheduledDischargeTime ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
    ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
    ScheduledProcedureStepDescription ScheduledProcedureStepEndDate ScheduledProcedureStepEndTime
    ScheduledProcedureStepExpirationDateTime ScheduledProcedureStepID ScheduledProcedureStepLocation
    ScheduledProcedureStepModificationDateTime ScheduledProcedureStepStartDate
    ScheduledProcedureStepStartDateTime ScheduledProcedureStepStartTime ScheduledStationAETitle
    ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
    ScheduledStudyLocation ScheduledStudyLocationAETitle ScheduledStudyStartDate ScheduledStudyStartTime
    ScheduledStudyStopDate ScheduledStudyStopTime SeriesDescription ServiceEpisodeDescription
    ServiceEpisodeID SetupTechniqueDescription ShieldingDeviceDescription SlideIdentifier SmokingStatus
    SourceManufacturer SpecialNeeds SpecimenAccessionNumber SpecimenDetailedDescription
    SpecimenShortDescription StationAETitle StructureSetDescription StructureSetName StudyArrivalDate
    StudyArrivalTime StudyComments StudyCompletionDate StudyCompletionTime StudyDescription
    StudyIDIssuer StudyReadDate StudyReadTime StudyVerifiedDate StudyVerifiedTime
    SubstanceAdministrationDateTime TelephoneNumberTrial TemplateLocalVersion TemplateVersion
    TextComments TextString TimeOfDocumentCreationOrVerbalTransactionTrial TimeOfLastCalibration
    TimeOfSecondaryCapture TimezoneOffsetFromUTC TopicAuthor TopicKeywords TopicSubject TopicTitle
    TransducerIdentificationSequence TreatmentSites UDISequence UniqueDeviceIdentifier
    VerbalSourceIdentifierCodeSequenceTrial VerbalSourceTrial VisitComments WaveformFilterDescription
    XRayDetectorLabel
Z:
    AccessionNumber CalibrationDateTime ClinicalTrialCoordinatingCenterName ClinicalTrialProtocolName
    ClinicalTrialSiteID ClinicalTrialSiteName ClinicalTrialTimePointID
    ConceptualVolumeCombinationDescription ConceptualVolumeDescription ConsultingPhysicianName
    DeviceAlternateIdentifier FillerOrderNumberImagingServiceRequest FractionationNotes
    IssuerOfTheContainerIdentifierSequence IssuerOfTheSpecimenIdentifierSequence
    ManufacturerDeviceIdentifier ParticipationDateTime PatientBirthDate PatientName PatientSex
    PlacerOrderNumberImagingServiceRequest PrescriptionNotes PrescriptionNotesSequence ROIInterpreter
    ROIName RTAccessoryDeviceSlotID RTAccessoryHolderSlotID RTPhysicianIntentNarrative
    RadiationGenerationModeDescription ReasonForSuperseding ReferringPhysicianName ReviewDate ReviewTime
    SourceOfPreviousValues SpecimenPreparationSequence StructureSetDate StructureSetTime StudyDate
    StudyID StudyTime TreatmentTechniqueNotes VerifyingObserverIdentificationCodeSequence
D:
    AcquisitionFieldOfViewLabel AnnotationGroupLabel AnnotationGroupUID AssertionDateTime
    AttributeModificationDateTime BeamHoldTransitionDateTime CertificateOfSigner
    ClinicalTrialProtocolEthicsCommitteeName ClinicalTrialProtocolID ClinicalTrialSponsorName
    ClinicalTrialSubjectID ClinicalTrialSubjectReadingID ContainerIdentifier ContentSequence
    ContextGroupLocalVersion ContextGroupVersion Date DateTime DecayCorrectionDateTime DestinationAE
    DeviceLabel DigitalSignatureDateTime EffectiveDateTime EncapsulatedDocument EntityLabel
    EntityLongLabel ExclusionStartDateTime FlowIdentifier FlowIdentifierSequence
    FrameAcquisitionDateTime FrameOriginTimestamp FrameReferenceDateTime FunctionalSyncPulse
    GraphicAnnotationSequence HangingProtocolCreationDateTime ImpedanceMeasurementDateTime
    InformationIssueDateTime InterlockDateTime InterlockDescription InterlockOriginDescription
    ModifyingSystem OverrideDateTime PersonIdentificationCodeSequence PersonName RTPlanLabel
    RTPrescriptionLabel RTToleranceSetLabel RadiationDoseIdentificationLabel
    RadiationDoseInVivoMeasurementLabel RadiationGenerationModeLabel ReasonForTheAttributeModification
    RecordedRTControlPointDateTime ReferencedDateTime SafePositionExitDate SafePositionExitTime
    SafePositionReturnDate SafePositionReturnTime SelectorAEValue SelectorASValue SelectorDAValue
    SelectorDTValue SelectorLOValue SelectorLTValue SelectorOBValue SelectorPNValue SelectorSHValue
    SelectorSTValue SelectorTMValue SelectorUNValue SelectorURValue SelectorUTValue SourceEndDateTime
    SourceIdentifier SourceStartDateTime SourceStrengthReferenceDate SourceStrengthReferenceTime
    SpecimenIdentifier StructureSetLabel Time TreatmentControlPointDate TreatmentControlPointTime
    TreatmentPositionGroupLabel TreatmentToleranceViolationDateTime
    TreatmentToleranceViolationDescription UserContentLabel UserContentLongLabel VerificationDateTime
    VerifyingObserverName VerifyingObserverSequence VerifyingOrganization XRayDetectorID XRaySourceID
U:
    AcquisitionUID ConcatenationUID ConceptualVolumeUID ConstituentConceptualVolumeUID DeviceUID
    DigitalSignatureUID DimensionOrganizationUID DoseReferenceUID DosimetricObjectiveUID
    FailedSOPInstanceUIDList FiducialUID FrameOfReferenceUID InstanceCreatorUID IrradiationEventUID
    LargePaletteColorLookupTableUID ManufacturerDeviceClassUID MediaStorageSOPInstanceUID
    MultiplexGroupUID ObservationSubjectUIDTrial ObservationUID PaletteColorLookupTableUID
    PatientSetupUID PresentationDisplayCollectionUID PresentationSequenceCollectionUID PyramidUID
    RTTreatmentPhaseUID ReferencedConceptualVolumeUID ReferencedDoseReferenceUID
    ReferencedDosimetricObjectiveUID ReferencedFiducialsUID ReferencedFrameOfReferenceUID
    ReferencedGeneralPurposeScheduledProcedureStepTransactionUID ReferencedObservationUIDTrial
    ReferencedSOPInstanceUID ReferencedSOPInstanceUIDInFile ReferencedTreatmentPositionGroupUID
    RelatedFrameOfReferenceUID RequestedSOPInstanceUID SOPInstanceUID SeriesInstanceUID
    SourceConceptualVolumeUID SourceFrameOfReferenceUID SpecimenUID StorageMediaFileSetUID
    StudyInstanceUID SynchronizationFrameOfReferenceUID TargetUID TemplateExtensionCreatorUID
    TemplateExtensionOrganizationUID TrackingUID TransactionUID TreatmentPositionGroupUID
    TreatmentSessionUID UID
X/Z:
    AcquisitionContextSequence AcquisitionDate AcquisitionTime BarcodeValue LabelText PatientSexNeutered
    ReferencedStudySequence RequestedProcedureDescription ReviewerName SourceSerialNumber
    TreatmentMachineName
X/D:
    AcquisitionDeviceProcessingDescription DateOfLastDetectorCalibration DetectorID
    EndAcquisitionDateTime FirstTreatmentDate InstanceCreationDate IntendedPhaseEndDate
    IntendedPhaseStartDate MostRecentTreatmentDate ObservationDateTime OperatorIdentificationSequence
    ProtocolName RTPlanDate RTPlanTime RTTreatmentApproachLabel SeriesDate SeriesTime
    StartAcquisitionDateTime TimeOfLastDetectorCalibration TreatmentDate TreatmentSite TreatmentTime
Z/D:
    ContentCreatorName ContentDate ContentTime ContrastBolusAgent InstructionPerformedDateTime PatientID
X/Z/D:
    AcquisitionDateTime DeviceSerialNumber InstanceCreationTime InstitutionCodeSequence InstitutionName
    OperatorsName ReferencedPerformedProcedureStepSequence StationName
X/Z/U*:
    ReferencedImageSequence SourceImageSequence
"""

# Combined codes -> the single action applied (see the module docstring).
_RESOLVE = {
    "X": "X", "Z": "Z", "D": "D", "U": "U", "K": "K", "C": "C",
    "X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U",
}  # fmt: skip


def _parse_table(text: str) -> dict[int, str]:
    table: dict[int, str] = {}
    code = None
    for token in text.split():
        if token.endswith(":"):
            code = token[:-1]
            continue
        tag = tag_for_keyword(token)
        if tag is None or code not in _RESOLVE or tag in table:
            raise RuntimeError(f"bad Table E.1-1 entry {code}: {token}")  # a typo in the table above
        table[tag] = code
    return table


TABLE_E_1_1: dict[int, str] = _parse_table(_TABLE_E_1_1)
"""Tag -> action code of PS3.15 2024b Table E.1-1, Basic Profile column, as written there."""

# Not in the table, removed all the same: it exists to carry the original (identifying) values.
_EXTRA_REMOVED = {tag_for_keyword("EncryptedAttributesSequence"): "X"}
_DESCRIPTIONS = {tag_for_keyword("StudyDescription"), tag_for_keyword("SeriesDescription")}
_PATIENT_ID = tag_for_keyword("PatientID")
_PATIENT_NAME = tag_for_keyword("PatientName")
_NEVER_SHIFTED = {tag_for_keyword("PatientBirthDate"), tag_for_keyword("PatientBirthTime")}
# Values whose words are cut out of kept descriptions.
_IDENTIFYING = [
    tag_for_keyword(keyword)
    for keyword in (
        "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
        "PatientMotherBirthName", "PatientBirthDate", "AccessionNumber", "InstitutionName",
        "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
        "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord", "OperatorsName", "RequestingPhysician",
        "StationName",
    )
]  # fmt: skip

_DATE_VRS = {"DA", "DT", "TM"}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_NUMBER_VRS = {"FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"}
_DUMMY = "ANONYMIZED"
_DT = re.compile(r"(\d{8})(\d{0,6}(?:\.\d{1,6})?)([+-]\d{4})?")  # YYYYMMDD, time, &ZZXX
_SHIFT_DAYS = (365, 3650)  # range of the backward date shift

_CODE_PROFILE = ("113100", "Basic Application Confidentiality Profile")
_CODE_MODIFIED_DATES = ("113107", "Retain Longitudinal Temporal Information Modified Dates Option")

# Why a file was skipped (DeidSummary keys) -> the ScanError message when it was the only input.
_SKIP_REASONS = {
    "not DICOM": "is not a DICOM file (no DICOM Part 10 header, and not named .dcm)",
    "unreadable": "could not be read as DICOM (truncated or corrupt?)",
    "DICOMDIR": "is a DICOMDIR (a media index, no image); de-identify its folder instead",
    "no SOP Instance UID": "has no SOP Instance UID, so it is no DICOM instance to de-identify",
    "duplicate SOP Instance UID": "has the SOP Instance UID of a file already written",
}


@dataclass
class DeidSummary:
    """What ``deidentify`` did, in counts only: it never holds an identifier."""

    files_written: int = 0
    files_skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    burned_in_annotation: int = 0  # written files that declare text burned into the pixels

    @property
    def skipped_total(self) -> int:
        return sum(self.files_skipped.values())

    def __str__(self) -> str:
        text = f"{self.files_written} files written, {self.skipped_total} skipped"
        if self.files_skipped:
            text += " (" + ", ".join(f"{n} {why}" for why, n in sorted(self.files_skipped.items())) + ")"
        if self.burned_in_annotation:
            text += f"; {self.burned_in_annotation} declare burned-in annotation: check their pixels"
        return text


@dataclass
class _Patient:
    """Per-dataset state: the replacements that depend on who the patient is."""

    pseudonym: str
    shift: timedelta
    identifying: re.Pattern[str] | None


class Deidentifier:
    """Applies the profile; reuse one object for all files of a run so UIDs and dates match.

    Args:
        salt: secret that keys every replacement. The same salt gives the same UIDs, pseudonyms
            and date shifts in every run; keep it secret (with it, a guessed original can be
            confirmed). None: a random one, so results are consistent within this object only.
        dates: ``"shift"`` (per-patient whole-day offset) or ``"remove"``.
        keep_descriptions: keep (cleaned) Study and Series Description; see the module docstring.
    """

    def __init__(self, salt: str | None = None, dates: str = "shift", keep_descriptions: bool = True):
        if dates not in ("shift", "remove"):
            raise ValueError(f'dates must be "shift" or "remove", not {dates!r}')
        self.dates = dates
        self.keep_descriptions = keep_descriptions
        self._key = salt.encode("utf-8") if salt is not None else secrets.token_bytes(32)
        self._codes = {**TABLE_E_1_1, **_EXTRA_REMOVED}
        if keep_descriptions:
            self._codes.update(dict.fromkeys(_DESCRIPTIONS, "C"))
        self._uids: dict[str, str] = {}

    # --- keyed replacements -------------------------------------------------------------------

    def _hash(self, purpose: str, value: str) -> bytes:
        message = f"{purpose}\0{value}".encode("utf-8", "surrogateescape")
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def new_uid(self, uid: str) -> str:
        """The replacement of ``uid``: ``2.25.`` + a UUID made from a keyed hash of it."""
        uid = str(uid).strip("\0 ")
        if not uid:
            return ""
        if uid not in self._uids:
            raw = bytearray(self._hash("uid", uid)[:16])
            raw[6] = (raw[6] & 0x0F) | 0x80  # UUID version 8 (vendor-defined, RFC 9562)
            raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
            self._uids[uid] = "2.25." + str(int.from_bytes(raw, "big"))
        return self._uids[uid]

    def _pseudonym(self, key: str, avoid: list[str]) -> str:
        avoid = [a.upper() for a in avoid if a]
        for attempt in itertools.count():  # retried only when a very short original shows up in it
            digest = self._hash("patient", f"{key}\0{attempt}")
            candidate = base64.b32encode(digest).decode("ascii")[:12]
            if not any(a in candidate for a in avoid):
                return candidate
        raise AssertionError("unreachable")

    def _shift(self, key: str) -> timedelta:
        low, high = _SHIFT_DAYS
        n = int.from_bytes(self._hash("date", key)[:8], "big")
        return timedelta(days=-(low + n % (high - low + 1)))

    # --- datasets -------------------------------------------------------------------------------

    def deidentify_dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of ``ds`` (``ds`` itself is left as it was)."""
        ds = copy.deepcopy(ds)
        with quiet_pydicom():
            self._deidentify_in_place(ds)
        return ds

    def _deidentify_in_place(self, ds: Dataset) -> None:
        patient_id, patient_name = _text(ds.get("PatientID")), _text(ds.get("PatientName"))
        # Files without PatientID fall back to the name, then the study, for their shift/pseudonym.
        key = patient_id or patient_name or _text(ds.get("StudyInstanceUID"))
        patient = _Patient(
            pseudonym=self._pseudonym(key, [patient_id, patient_name]) if key else "",
            shift=self._shift(key),
            identifying=_identifying_words(ds),
        )
        self._clean(ds, patient, top=True)
        self._mark(ds)
        self._rebuild_file_meta(ds)
        ds.preamble = None  # the preamble may hold anything (e.g. a TIFF header); write zeros

    def _clean(self, ds: Dataset, patient: _Patient, top: bool) -> None:
        for tag in list(ds.keys()):
            group = tag >> 16
            if tag.is_private or (tag & 0xFFFF) == 0 or (group & 0xFF01) in (0x5000, 0x6000):
                del ds[tag]  # private, group length, curve or overlay
                continue
            action = _RESOLVE.get(self._codes.get(tag, ""))
            if action == "X":
                del ds[tag]
                continue
            elem = ds[tag]
            if elem.VR == "SQ":
                if action in (None, "K", "C", "U"):
                    for item in elem.value:
                        self._clean(item, patient, top=False)
                else:
                    elem.value = Sequence()
            elif tag == _PATIENT_ID and elem.value:
                elem.value = self._pseudonym(_text(elem), [_text(elem)]) if not top else patient.pseudonym
            elif tag == _PATIENT_NAME and top and patient.pseudonym:
                elem.value = patient.pseudonym
            elif elem.VR in _DATE_VRS:
                self._date(elem, patient, never_shift=tag in _NEVER_SHIFTED)
            elif action in ("Z", "D", "U", "C"):
                elem.value = self._replace(elem, action, patient)

    def _replace(self, elem, action: str, patient: _Patient):
        """The new value of a non-sequence, non-date element under Z, D, U or C."""
        values = elem.value if elem.VM > 1 else [elem.value]
        if action == "C":
            if elem.VR not in _TEXT_VRS or patient.identifying is None:
                return elem.value
            cleaned = [" ".join(patient.identifying.sub(" ", str(v)).split()) for v in values]
            return cleaned if elem.VM > 1 else cleaned[0]
        if action == "Z" or elem.is_empty:
            return elem.empty_value
        if elem.VR == "UI":  # U, and D on a UID: a consistent replacement
            new = [self.new_uid(v) for v in values]
            return new if elem.VM > 1 else new[0]
        if action == "U":
            return elem.empty_value
        # D: a dummy of the right VR
        if elem.VR in _TEXT_VRS:
            return _DUMMY
        if elem.VR in ("DS", "IS"):
            return "0"
        if elem.VR == "AS":
            return "000Y"
        if elem.VR in _NUMBER_VRS:
            return 0
        if elem.VR in _BINARY_VRS:
            return b"\0" * 8  # a valid length for every O* VR
        return elem.empty_value

    def _date(self, elem, patient: _Patient, never_shift: bool) -> None:
        if self.dates == "remove" or never_shift:
            elem.value = elem.empty_value
        elif elem.VR != "TM" and not elem.is_empty:  # shifting whole days leaves times of day alone
            values = elem.value if elem.VM > 1 else [elem.value]
            shifted = [_shift_value(str(v), elem.VR, patient.shift) for v in values]
            elem.value = shifted if elem.VM > 1 else shifted[0]

    def _mark(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        methods = ["medmllm: DICOM PS3.15 E.1 Basic Profile"]
        methods.append("dates shifted per patient" if self.dates == "shift" else "dates and times removed")
        if self.keep_descriptions:
            methods.append("Study/Series Description kept, cleaned")
        ds.DeidentificationMethod = methods
        codes = [_CODE_PROFILE] + ([_CODE_MODIFIED_DATES] if self.dates == "shift" else [])
        ds.DeidentificationMethodCodeSequence = Sequence([_code_item(*c) for c in codes])
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if self.dates == "shift" else "REMOVED"

    def _rebuild_file_meta(self, ds: Dataset) -> None:
        old = getattr(ds, "file_meta", None)
        if old is None:
            return
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = old.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID", "")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or self.new_uid(
            old.get("MediaStorageSOPInstanceUID", "")
        )
        if "TransferSyntaxUID" in old:
            meta.TransferSyntaxUID = old.TransferSyntaxUID
        else:  # read without one: keep the encoding pydicom found
            implicit = ds.original_encoding[0]
            meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta

    # --- files ------------------------------------------------------------------------------------

    def deidentify_file(self, src: str | Path, dst: str | Path) -> Path:
        """Write a de-identified copy of DICOM file ``src`` to the file ``dst``; returns ``dst``."""
        src, dst = Path(src), Path(dst)
        if not src.is_file():
            raise ScanError(src, "does not exist or is not a file")
        if dst.exists() and dst.resolve() == src.resolve():
            raise ScanError(dst, "is the input file; write the de-identified copy elsewhere")
        ds = self._read_or_raise(src)
        self._write(ds, dst)
        return dst

    def _read(self, path: Path) -> tuple[Dataset | None, str | None]:
        """(de-identified dataset, None), or (None, why the file is skipped)."""
        with quiet_pydicom():
            try:
                # Like the reader (scans/dicom.py): a .dcm file may lack the Part 10 header.
                ds = dcmread(path, force=path.suffix.lower() == ".dcm")
            except InvalidDicomError:
                return None, "not DICOM"
            except Exception:  # noqa: BLE001 - corrupt files raise all kinds of errors in pydicom
                return None, "unreadable"
            meta_class = getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
            if meta_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds:
                return None, "DICOMDIR"
            if not _text(ds.get("SOPInstanceUID")):
                return None, "no SOP Instance UID"
            if _truncated(ds):
                return None, "unreadable"
            self._deidentify_in_place(ds)
        return ds, None

    def _read_or_raise(self, path: Path) -> Dataset:
        ds, why = self._read(path)
        if ds is None:
            raise ScanError(path, _SKIP_REASONS[why])
        return ds

    @staticmethod
    def _write(ds: Dataset, dst: Path) -> None:
        """Write atomically (see `atomic_path`): a crash never leaves a half-written file."""
        with atomic_path(dst) as tmp, quiet_pydicom():
            ds.save_as(tmp, enforce_file_format=True)


def deidentify(
    src: str | Path,
    dst: str | Path,
    *,
    salt: str | None = None,
    dates: str = "shift",
    keep_descriptions: bool = True,
) -> DeidSummary:
    """De-identify a DICOM file or a folder tree of them into ``dst``.

    A file ``src`` goes to the file ``dst``, or into ``dst`` as ``<new SOP Instance UID>.dcm`` when
    ``dst`` is an existing folder. A folder ``src`` is walked recursively; each DICOM file goes to
    ``dst/<new Study UID>/<new Series UID>/<new SOP Instance UID>.dcm`` (no input file or folder
    name is copied: they often carry patient names); other files, DICOMDIRs and duplicates are
    skipped and counted.
    ``dst`` must not be ``src`` nor lie inside it. See `Deidentifier` for ``salt`` and ``dates``.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ScanError(src, "does not exist")
    deid = Deidentifier(salt=salt, dates=dates, keep_descriptions=keep_descriptions)
    summary = DeidSummary()
    if src.is_file():
        if dst.is_dir():
            ds = deid._read_or_raise(src)
            out = dst / f"{ds.SOPInstanceUID}.dcm"
        else:
            if dst.exists() and dst.resolve() == src.resolve():
                raise ScanError(dst, "is the input file; write the de-identified copy elsewhere")
            ds, out = deid._read_or_raise(src), dst
        deid._write(ds, out)
        summary.files_written = 1
        summary.burned_in_annotation = int(ds.get("BurnedInAnnotation") == "YES")
        return summary

    src_abs, dst_abs = src.resolve(), dst.resolve()
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise ScanError(dst, "is the input folder or inside it; choose an output folder outside it")
    if dst.exists() and not dst.is_dir():
        raise ScanError(dst, "is a file; give a folder as output for a folder input")
    skipped: Counter[str] = Counter()
    written: set[Path] = set()
    for root, dirs, files in os.walk(src):
        dirs.sort()  # a stable order, so "duplicate" always skips the same copy
        for name in sorted(files):
            ds, why = deid._read(Path(root) / name)
            if ds is not None:
                # New UIDs name folders and files: input folder names often carry patient names.
                out = dst / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
                if out in written:
                    ds, why = None, "duplicate SOP Instance UID"
            if ds is None:
                skipped[why] += 1
                continue
            deid._write(ds, out)
            written.add(out)
            summary.burned_in_annotation += ds.get("BurnedInAnnotation") == "YES"
    summary.files_written = len(written)
    summary.files_skipped = dict(skipped)
    return summary


def _truncated(ds: Dataset) -> bool:
    """Native Pixel Data shorter than its image attributes say: the file was cut off.

    pydicom reads a cut-off file without complaint; this is the one check that catches it cheaply.
    """
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if "PixelData" not in ds or syntax is None or syntax.is_compressed:
        return False
    try:
        return len(ds.PixelData) < get_expected_length(ds, "bytes")
    except (AttributeError, KeyError, TypeError, ValueError):  # image attributes missing or odd
        return False


def _text(value) -> str:
    """An element's (or value's) text, '' for missing or empty."""
    if value is None:
        return ""
    value = getattr(value, "value", value)
    return "" if value is None else str(value).strip()


def _shift_value(value: str, vr: str, shift: timedelta) -> str:
    """A DA or DT value moved by ``shift``; '' when it holds no full date (nothing to shift)."""
    text = value.strip()
    if vr == "DA":
        day, time = text.replace(".", "") if len(text) == 10 else text, ""  # ACR-NEMA "YYYY.MM.DD"
        if len(day) != 8 or not day.isdigit():
            return ""
    else:
        match = _DT.fullmatch(text)
        if match is None:
            return ""
        day, time = match.group(1), match.group(2)  # the time zone suffix is dropped
    try:
        new = date(int(day[:4]), int(day[4:6]), int(day[6:])) + shift
    except (ValueError, OverflowError):
        return ""
    return f"{new.year:04d}{new.month:02d}{new.day:02d}{time}"


def _identifying_words(ds: Dataset) -> re.Pattern[str] | None:
    """A pattern matching the dataset's identifying values and their name parts, as whole words."""
    words: set[str] = set()
    for tag in _IDENTIFYING:
        elem = ds.get(tag)
        if elem is None or elem.is_empty:
            continue
        for value in elem.value if elem.VM > 1 else [elem.value]:
            text = str(value).strip()
            words.add(text)
            if elem.VR == "PN":
                words.update(re.split(r"[\^=\s,]+", text))
    # Drop tiny or short numeric words, which would also cut e.g. "1 mm" out of a description.
    words = {w for w in words if len(w) >= 2 and not (w.isdigit() and len(w) < 4)}
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _code_item(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item
