"""classify_series: vendor-realistic tag sets → kind, conservative about T1w."""

from __future__ import annotations

import pytest

from alzmri.io.series_kind import KINDS, classify_series

# Tags as the Siemens Trio (syngo MR B17) session in shared/data writes them (checked with pydicom).
TRIO_MPRAGE = {
    "Modality": "MR", "Manufacturer": "SIEMENS", "SeriesDescription": "t1_MPRAGEcr_noGRAPPA", "ProtocolName": "t1_MPRAGEcr_noGRAPPA",
    "SequenceName": "tfl3d1_ns", "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SP", "MP"], "ScanOptions": "IR",
    "MRAcquisitionType": "3D", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"], "RepetitionTime": "2250",
    "EchoTime": "3.98", "InversionTime": "850", "FlipAngle": "9", "SliceThickness": "1",
}
TRIO_FIELDMAP = {
    "Modality": "MR", "Manufacturer": "SIEMENS", "SeriesDescription": "gre_field_mapping", "ProtocolName": "gre_field_mapping",
    "SequenceName": "fm2d2r", "ScanningSequence": "GR", "SequenceVariant": "SP", "ScanOptions": "", "MRAcquisitionType": "2D",
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"], "RepetitionTime": "488", "EchoTime": "7.38", "FlipAngle": "60", "SliceThickness": "3",
}
MPRAGE = {**TRIO_MPRAGE, "SeriesDescription": "t1_mprage_sag_p2_iso", "ProtocolName": "t1_mprage_sag_p2_iso", "SequenceName": "*tfl3d1_16ns"}
GE_IR_FSPGR = {
    "Modality": "MR", "Manufacturer": "GE MEDICAL SYSTEMS", "SeriesDescription": "Accelerated Sagittal IR-FSPGR",
    "SequenceName": "efgre3d", "ScanningSequence": "GR", "SequenceVariant": ["SS", "SK"],
    "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "TRF_GEMS", "IR_GEMS", "ACC_GEMS"], "MRAcquisitionType": "3D",
    "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "RepetitionTime": "6.98", "EchoTime": "2.85", "InversionTime": "400",
    "FlipAngle": "11", "SliceThickness": "1.2",
}
GE_SPGR = {
    "Modality": "MR", "Manufacturer": "GE MEDICAL SYSTEMS", "SeriesDescription": "SAG 3D SPGR", "SequenceName": "efgre3d",
    "ScanningSequence": "GR", "SequenceVariant": ["SS", "SP"], "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "PFF"],
    "MRAcquisitionType": "3D", "ImageType": ["ORIGINAL", "PRIMARY", "OTHER"], "RepetitionTime": "7.6", "EchoTime": "3.1",
    "FlipAngle": "12", "SliceThickness": "1.5",
}
PHILIPS_TFE = {
    "Modality": "MR", "Manufacturer": "Philips Medical Systems", "SeriesDescription": "3D_T1W_TFE_SAG", "SequenceName": "",
    "ScanningSequence": "GR", "SequenceVariant": "SP", "ScanOptions": "OTHER", "MRAcquisitionType": "3D",
    "ImageType": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"], "RepetitionTime": "8.1", "EchoTime": "3.7", "FlipAngle": "8",
    "SliceThickness": "1.2",
}
T2_TSE = {
    "Modality": "MR", "SeriesDescription": "t2_tse_tra", "SequenceName": "*tse2d1_11", "ScanningSequence": "SE",
    "SequenceVariant": ["SK", "SP", "OSP"], "MRAcquisitionType": "2D", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    "RepetitionTime": "5000", "EchoTime": "98", "FlipAngle": "150", "SliceThickness": "5",
}
FLAIR = {
    **T2_TSE, "SeriesDescription": "t2_tirm_tra_dark-fluid", "SequenceName": "*tir2d1_13", "ScanningSequence": ["SE", "IR"],
    "RepetitionTime": "9000", "EchoTime": "81", "InversionTime": "2500",
}


def kind(tags: dict, n: int = 1, **per_file) -> str:
    return classify_series([{**tags, **{k: v[i % len(v)] for k, v in per_file.items()}} for i in range(n)])[0]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (TRIO_MPRAGE, "T1w"),
        (MPRAGE, "T1w"),
        (GE_IR_FSPGR, "T1w"),
        ({**GE_IR_FSPGR, "SeriesDescription": "Sag BRAVO", "InversionTime": "450"}, "T1w"),
        (GE_SPGR, "T1w"),
        (PHILIPS_TFE, "T1w"),
        ({**PHILIPS_TFE, "SequenceName": "T1TFE"}, "T1w"),
        # field maps: the Trio's magnitude and phase series, a 3D field map, a phase-difference image by description
        (TRIO_FIELDMAP, "fieldmap"),
        ({**TRIO_FIELDMAP, "ImageType": ["ORIGINAL", "PRIMARY", "P", "ND"]}, "fieldmap"),
        ({**MPRAGE, "SeriesDescription": "B0 map", "SequenceName": ""}, "fieldmap"),
        ({**GE_SPGR, "ImageType": ["ORIGINAL", "PRIMARY", "PHASE"]}, "fieldmap"),
        # localizers
        ({**TRIO_FIELDMAP, "SeriesDescription": "localizer", "SequenceName": "*fl2d1", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, "localizer"),
        ({**MPRAGE, "SeriesDescription": "AAHead_Scout_64ch-head-coil"}, "localizer"),
        ({**GE_SPGR, "SeriesDescription": "3-Plane Loc"}, "localizer"),
        ({**MPRAGE, "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "localizer"),
        # derived, with the original's sequence tags still present
        ({**MPRAGE, "SeriesDescription": "t1_mprage_sag_p2_iso_MPR_tra", "ImageType": ["DERIVED", "SECONDARY", "MPR", "CSA MPR", "CSAPARALLEL", "M", "ND", "NORM"]}, "derived"),
        ({**MPRAGE, "ImageType": ["DERIVED", "PRIMARY", "M", "ND", "UNI"], "SeriesDescription": "mp2rage_UNI_Images"}, "derived"),
        ({**MPRAGE, "ImageType": ["ORIGINAL", "PRIMARY", "PROJECTION IMAGE"]}, "derived"),
        ({**T2_TSE, "SeriesDescription": "MoCoSeries", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC", "MOCO"]}, "derived"),
        ({**T2_TSE, "SeriesDescription": "ep2d_diff_ADC", "ImageType": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]}, "derived"),
        # the other contrasts
        (T2_TSE, "T2w"),
        ({**T2_TSE, "SeriesDescription": "Ax FSE", "SequenceName": ""}, "T2w"),  # by TR/TE
        (FLAIR, "FLAIR"),
        ({**FLAIR, "SeriesDescription": "sag 3d", "SequenceName": "*spcir_278", "MRAcquisitionType": "3D", "EchoTime": "386", "InversionTime": "1800"}, "FLAIR"),
        ({**T2_TSE, "SeriesDescription": "pd_tse_tra", "EchoTime": "12", "RepetitionTime": "3000"}, "PD"),
        ({**T2_TSE, "SeriesDescription": "ep2d_diff_mddw_20", "SequenceName": "*ep_b1000#4", "ScanningSequence": "EP"}, "dwi"),
        ({**T2_TSE, "SeriesDescription": "ax dti", "DiffusionBValue": 1000}, "dwi"),
        ({**T2_TSE, "SeriesDescription": "ep2d_bold_moco_off", "SequenceName": "*epfid2d1_64", "ScanningSequence": "EP", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]}, "bold"),
        ({**T2_TSE, "SeriesDescription": "series 7", "SequenceName": "", "ScanningSequence": ["EP", "GR"], "EchoTime": "30"}, "bold"),
        # not T1w for other reasons
        ({**MPRAGE, "Modality": "CT"}, "other"),
        ({**GE_SPGR, "SeriesDescription": "tof_3d_multi-slab", "SequenceName": "*fl3d1r_t70", "RepetitionTime": "22"}, "other"),
        ({**GE_SPGR, "SeriesDescription": "head 3d", "SequenceName": "*fl3d1r", "ScanOptions": ["FC", "SAT1"]}, "other"),
        ({**GE_SPGR, "SeriesDescription": "swi_combined", "SequenceName": "*swi3d1r", "EchoTime": "20"}, "other"),
        ({**GE_SPGR, "SeriesDescription": "3d gre", "SequenceName": "", "EchoTime": "20"}, "other"),  # TE too long
        ({**T2_TSE, "SeriesDescription": "t1_se_tra", "SequenceName": "*se2d1", "RepetitionTime": "500", "EchoTime": "12", "FlipAngle": "90"}, "other"),
        ({**MPRAGE, "MRAcquisitionType": "2D"}, "other"),  # 2D
        ({**GE_SPGR, "FlipAngle": "60"}, "other"),  # not a low flip angle
        ({**GE_SPGR, "RepetitionTime": "100"}, "other"),  # TR too long for a spoiled gradient echo without inversion
        ({**MPRAGE, "InversionTime": "2000"}, "other"),  # TI too long for T1w
        ({**MPRAGE, "SliceThickness": "5"}, "other"),  # thick slabs
        ({**MPRAGE, "SeriesDescription": "t1_mp2rage_sag_p3_INV1", "InversionTime": "700"}, "other"),
        ({**MPRAGE, "SeriesDescription": "t2_tse_sag"}, "T2w"),  # the description contradicts the tags: not T1w
        # too little to tell: never T1w
        ({"Modality": "MR", "SeriesDescription": "MPRAGE", "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"]}, "unknown"),
        ({"Modality": "MR", "SeriesDescription": "MPRAGE", "RepetitionTime": 2300.0, "EchoTime": 2.98, "InversionTime": 900.0, "FlipAngle": 9.0}, "unknown"),
        ({**MPRAGE, "SequenceName": "", "ScanningSequence": None}, "unknown"),
    ],
)
def test_kinds(tags: dict, expected: str) -> None:
    got, reason = classify_series([tags])
    assert got == expected, reason
    assert got in KINDS and "\n" not in reason
    assert reason.startswith(("localizer/scout:" if got == "localizer" else f"{got}:"))
    assert reason.endswith("; not a T1w") != (got in ("T1w", "unknown"))


def test_reasons_name_the_deciding_tags() -> None:
    phase = {**TRIO_FIELDMAP, "SequenceName": "*fm2d2r", "ImageType": ["ORIGINAL", "PRIMARY", "P"]}
    assert classify_series([phase]) == (
        "fieldmap", "fieldmap: SequenceName *fm2d2r, SeriesDescription 'gre_field_mapping', ImageType ORIGINAL\\PRIMARY\\P; not a T1w",
    )
    assert classify_series([TRIO_MPRAGE]) == (
        "T1w", "T1w: MRAcquisitionType 3D, ScanningSequence GR\\IR, SequenceName tfl3d1_ns, TE 3.98 ms, TI 850 ms",
    )
    assert classify_series([GE_SPGR])[1] == "T1w: MRAcquisitionType 3D, ScanningSequence GR, SequenceName efgre3d, TE 3.1 ms, TR 7.6 ms, FlipAngle 12"
    kind, reason = classify_series([{"Modality": "MR", "SeriesDescription": "MPRAGE"}])
    assert (kind, reason) == ("unknown", "unknown: no MRAcquisitionType, ScanningSequence, EchoTime, RepetitionTime, FlipAngle (SeriesDescription 'MPRAGE'); not known to be T1w")


def test_whole_series_evidence() -> None:
    # The Trio's magnitude field map holds both echoes in one series: two echo times, even without its name.
    anonymous = {**TRIO_FIELDMAP, "SequenceName": "", "SeriesDescription": "series 2", "ProtocolName": ""}
    assert kind(anonymous, 4, EchoTime=["4.92", "7.38"]) == "fieldmap"
    assert kind(anonymous, 4) == "other"  # one echo: a 2D gradient echo, still not T1w
    # magnitude and phase images mixed in one series
    assert kind(GE_SPGR, 4, ImageType=[["ORIGINAL", "PRIMARY", "M"], ["ORIGINAL", "PRIMARY", "P"]]) == "fieldmap"
    # backslash-separated strings and pydicom-like values are read alike
    assert kind({**TRIO_MPRAGE, "ScanningSequence": "GR\\IR", "ImageType": "ORIGINAL\\PRIMARY\\M\\ND"}) == "T1w"
    assert classify_series([]) [0] == "unknown"
