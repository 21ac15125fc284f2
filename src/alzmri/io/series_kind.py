"""What an MR series is, from its DICOM tags: :func:`classify_series` → ``(kind, reason)``.

Only ``T1w`` series are converted by ``alzmri convert`` and read by ``read_dicom_series``, so the
rules are conservative: a series is ``T1w`` only when its tags positively say "3D, T1-weighted
gradient echo", and anything doubtful is another kind. Kinds:

``T1w``  3D T1-weighted (MPRAGE, IR-SPGR/IR-FSPGR/BRAVO, SPGR/FLASH, TFE).
``localizer``, ``derived``, ``fieldmap``, ``dwi``, ``bold``, ``FLAIR``, ``T2w``, ``PD``
         series that are not T1w, recognised as such.
``other``    an MR (or non-MR) series whose tags contradict T1w (2D, long TE, SE, angiography...).
``unknown``  an MR series whose tags are too sparse to tell (no MRAcquisitionType, ScanningSequence,
         SequenceName or EchoTime); never assumed to be T1w here (``read_dicom_series`` may read a
         lone one, with a warning).

Tags used (all headers of the series, the first for single values): Modality, SOPClassUID,
ImageType, SeriesDescription + ProtocolName ("description"), SequenceName (0018,0024; a leading
``*`` is ignored), ScanningSequence (0018,0020), SequenceVariant, ScanOptions, MRAcquisitionType,
RepetitionTime (TR), EchoTime (TE; every distinct value), InversionTime (TI), FlipAngle,
SliceThickness, DiffusionBValue. Rules, first match wins:

1. ``other``: Modality is not MR (or missing, and the SOP class is not an MR image).
2. ``localizer``: ImageType has LOCALIZER, or the description says localizer/scout/survey/
   tripilot/3-plane/AAHead.
3. ``derived``: ImageType has DERIVED, SECONDARY, MPR (or a CSA MPR/PARALLEL/RESAMPLED token),
   PROJECTION IMAGE, MIP/MNIP, REFORMATTED, RESAMPLED, MOCO, ADC, FA, TRACEW, SUB/SUBTRACTION, UNI;
   or the description says MoCoSeries, MIP, reformat, ADC or TRACEW (not "moco" alone: Siemens
   names the original BOLD series ``ep2d_bold_moco`` too).
4. ``other`` (angiography / susceptibility): description TOF, angio, MRA, SWI, SWAN, susceptibility,
   T2*, QSM; SequenceName ``swi*``; ScanOptions FC (flow compensation: TOF angiography). Also
   ``other``: an MP2RAGE inversion image (description ``INV1``/``INV2``; its UNI image is derived).
5. ``fieldmap``: SequenceName ``fm*`` (Siemens ``fm2d2r``) or containing ``b0map``/``fieldmap``;
   description field map / fmap / B0 map / phase difference / topup; ImageType with a phase or
   complex token (P, PHASE, PHASE MAP, REAL, IMAGINARY, B0 MAP, FIELD_MAP); or two or three distinct
   echo times in a non-3D, non-inversion gradient-echo series.
6. ``dwi``: description DWI/DTI/diff.../tensor/HARDI/DKI; SequenceName ``ep_b*``, ``re_b*``,
   ``*_b<number>``; ImageType DIFFUSION; DiffusionBValue > 0.
7. ``bold``: description BOLD/fMRI/rest/task/func; SequenceName ``epfid*``; ImageType FMRI or
   MOSAIC; or echo-planar gradient echo (ScanningSequence EP with GR).
8. ``FLAIR``: description FLAIR/TIRM/dark fluid; SequenceName ``spcir*``/``tir*`` with TI ≥ 1500 ms;
   or an inversion with TI ≥ 1500 ms and TE ≥ 50 ms.
9. ``T2w``: description T2 (T2w, t2_tse, T2 SPACE...; not T2*); or spin echo with TE ≥ 60 ms and
   TR ≥ 1500 ms.
10. ``PD``: description PD / proton density; or spin echo with TE < 30 ms and TR ≥ 1500 ms.
11. ``T1w`` when every requirement below holds, ``other`` when a present tag contradicts one,
    ``unknown`` when none is contradicted but the tags needed are missing:

    - 3D: MRAcquisitionType 3D (or, without it, ``3d`` in the SequenceName);
    - gradient echo: ScanningSequence has GR and not EP (or, without it, a T1w sequence name:
      Siemens ``tfl*``/``fl3d*``, GE ``efgre3d``/``fspgr``/``spgr``/``bravo``, Philips ``T1TFE``/
      ``T1FFE``/``TFE``);
    - short echo: TE < 10 ms (every echo);
    - T1 weighting, either an inversion (TI > 0, IR in ScanningSequence or ScanOptions, MP in
      SequenceVariant, or a ``tfl``/``bravo``/``ir*fspgr``/``tfe`` sequence name) with TI, when
      given, in 200–1500 ms; or a spoiled gradient echo with TR < 30 ms and FlipAngle 5–40°;
    - SliceThickness at most 3 mm.

The number of slices is checked by the caller (``min_slices``), not here. Reasons read
``"<kind>: <tag> <value>, ...; not a T1w"`` (``"localizer/scout: ..."`` for localizers), or for
T1w ``"T1w: <the evidence>"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

KINDS = ("T1w", "T2w", "FLAIR", "PD", "dwi", "bold", "fieldmap", "localizer", "derived", "other", "unknown")

_MR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4"}
_LOCALIZER = re.compile(r"locali[sz]er|scout|survey|tri-?pilot|3[ _-]?plane|aahead", re.IGNORECASE)
_DERIVED_TOKENS = {
    "DERIVED", "SECONDARY", "MPR", "PROJECTION IMAGE", "PROJECTION", "MIP", "MNIP", "MINIP", "REFORMATTED", "REFORMAT",
    "RESAMPLED", "CSAPARALLEL", "CSARESAMPLED", "MOCO", "ADC", "EADC", "FA", "TRACEW", "SUB", "SUBTRACTION", "UNI",
}
_DERIVED_DESC = re.compile(r"mocoseries|(?<![a-z])mip(?![a-z])|reformat|(?<![a-z])adc(?![a-z])|tracew", re.IGNORECASE)
_ANGIO_SWI_DESC = re.compile(r"(?<![a-z])tof(?![a-z])|angio|(?<![a-z])mra(?![a-z])|(?<![a-z])swi|swan|suscept|t2\*|t2_?star|(?<![a-z])qsm", re.IGNORECASE)
_FIELDMAP_DESC = re.compile(r"field[ _-]?map|(?<![a-z])fmap|b0[ _-]?map|phase[ _-]?diff|topup", re.IGNORECASE)
_PHASE_TOKENS = {"P", "PHASE", "PHASE MAP", "REAL", "IMAGINARY", "B0 MAP", "B0MAP", "FIELD_MAP", "FIELDMAP"}
_DWI_DESC = re.compile(r"dwi|dti|diff|tensor|hardi|(?<![a-z])dki(?![a-z])", re.IGNORECASE)
_BOLD_DESC = re.compile(r"bold|fmri|(?<![a-z])rest(?:ing)?(?![a-z])|(?<![a-z])task|(?<![a-z])func", re.IGNORECASE)
_FLAIR_DESC = re.compile(r"flair|(?<![a-z])tirm|dark[ _-]?fluid", re.IGNORECASE)
_T2_DESC = re.compile(r"(?<![a-z0-9])t2(?:w|spc|space|tse|fse|frfse|blade|prop)?(?![a-z0-9*])", re.IGNORECASE)
_PD_DESC = re.compile(r"(?<![a-z0-9])pd(?:w|fs)?(?![a-z])|proton[ _-]?dens", re.IGNORECASE)
_T1_SEQUENCE = re.compile(r"^(?:tfl|fl3d)|efgre3d|fspgr|spgr|bravo|t1tfe|t1ffe|(?<![a-z])tfe", re.IGNORECASE)
_PREPARED_SEQUENCE = re.compile(r"^tfl|bravo|ir-?fspgr|t1tfe|(?<![a-z])tfe", re.IGNORECASE)


def classify_series(headers: Sequence[Any]) -> tuple[str, str]:
    """The kind of one series (see the module docstring for the rules) and the reason, in one line.

    Args:
        headers: the series' headers (pydicom datasets, or mappings of DICOM keyword → value);
            multi-valued tags may be lists or backslash-separated strings.

    Returns:
        ``(kind, reason)`` with ``kind`` one of :data:`KINDS`.
    """
    if not headers:
        return "unknown", "unknown: no headers; not known to be T1w"
    f = _Facts(headers)

    # 1. modality
    if f.modality != "MR" and not (not f.modality and f.sop_class in _MR_SOP_CLASSES):
        return "other", _why("other", f"Modality {f.modality or 'missing'}", "not an MR image")
    # 2. localizer
    if "LOCALIZER" in f.image_type:
        return "localizer", _why("localizer/scout", f.show_image_type())
    if _LOCALIZER.search(f.description):
        return "localizer", _why("localizer/scout", f.show_description())
    # 3. derived
    derived = [t for t in f.image_type if t in _DERIVED_TOKENS or "MPR" in t.split() or t.startswith("CSA ")]
    if derived:
        return "derived", _why("derived", f.show_image_type())
    if _DERIVED_DESC.search(f.description):
        return "derived", _why("derived", f.show_description())
    # 4. angiography, susceptibility
    if _ANGIO_SWI_DESC.search(f.description):
        return "other", _why("other", f.show_description(), "angiography/susceptibility")
    if re.search(r"inv[12](?![0-9])", f.description):
        return "other", _why("other", f.show_description(), "an MP2RAGE inversion image")
    if f.sequence.startswith("swi"):
        return "other", _why("other", f.show_sequence(), "susceptibility-weighted")
    if "FC" in f.options:
        return "other", _why("other", f"ScanOptions {f.show(f.options)}", "flow-compensated (angiography?)")
    # 5. field map
    evidence = []
    if re.match(r"fm\d|fm_", f.sequence) or "b0map" in f.sequence or "fieldmap" in f.sequence:
        evidence.append(f.show_sequence())
    if _FIELDMAP_DESC.search(f.description):
        evidence.append(f.show_description())
    if _PHASE_TOKENS & set(f.image_type):
        evidence.append(f.show_image_type())
    if 2 <= len(f.echo_times) <= 3 and "GR" in f.scanning and f.acquisition != "3D" and not f.inverted:
        evidence.append(f"{len(f.echo_times)} echo times {f.show_te()}")
    if evidence:
        return "fieldmap", _why("fieldmap", *evidence)
    # 6. diffusion
    evidence = []
    if _DWI_DESC.search(f.description):
        evidence.append(f.show_description())
    if re.match(r"(?:ep|re|ez)_b", f.sequence) or re.search(r"_b\d", f.sequence):
        evidence.append(f.show_sequence())
    if "DIFFUSION" in f.image_type:
        evidence.append(f.show_image_type())
    if f.b_value:
        evidence.append(f"DiffusionBValue {f.b_value:g}")
    if evidence:
        return "dwi", _why("dwi", *evidence)
    # 7. BOLD
    evidence = []
    if _BOLD_DESC.search(f.description):
        evidence.append(f.show_description())
    if f.sequence.startswith("epfid"):
        evidence.append(f.show_sequence())
    if {"FMRI", "MOSAIC"} & set(f.image_type):
        evidence.append(f.show_image_type())
    if "EP" in f.scanning and "GR" in f.scanning:
        evidence.append(f"ScanningSequence {f.show(f.scanning)}")
    if evidence:
        return "bold", _why("bold", *evidence)
    # 8. FLAIR
    if _FLAIR_DESC.search(f.description):
        return "FLAIR", _why("FLAIR", f.show_description())
    if f.ti is not None and f.ti >= 1500 and (re.match(r"spcir|tir", f.sequence) or (f.te_max is not None and f.te_max >= 50)):
        return "FLAIR", _why("FLAIR", f"TI {f.ti:g} ms", f"TE {f.show_te()}", *([f.show_sequence()] if f.sequence else []))
    # 9-10. T2w, PD
    if _T2_DESC.search(f.description):
        return "T2w", _why("T2w", f.show_description())
    spin_echo = "SE" in f.scanning and "GR" not in f.scanning and "EP" not in f.scanning and not f.inverted
    if spin_echo and f.tr is not None and f.tr >= 1500 and f.te_max is not None and f.te_max >= 60:
        return "T2w", _why("T2w", f"ScanningSequence {f.show(f.scanning)}", f"TR {f.tr:g} ms", f"TE {f.show_te()}")
    if _PD_DESC.search(f.description):
        return "PD", _why("PD", f.show_description())
    if spin_echo and f.tr is not None and f.tr >= 1500 and f.te_max is not None and f.te_max < 30:
        return "PD", _why("PD", f"ScanningSequence {f.show(f.scanning)}", f"TR {f.tr:g} ms", f"TE {f.show_te()}")
    # 11. T1w requirements
    return _t1w(f)


def _t1w(f: _Facts) -> tuple[str, str]:
    """``T1w`` when every requirement holds, else ``other`` (a contradiction) or ``unknown``."""
    good: list[str] = []
    bad: list[str] = []
    missing: list[str] = []
    t1_name = bool(_T1_SEQUENCE.search(f.sequence))

    if f.acquisition == "3D":
        good.append("MRAcquisitionType 3D")
    elif f.acquisition:
        bad.append(f"MRAcquisitionType {f.acquisition}")
    elif "3d" in f.sequence:
        good.append(f"{f.show_sequence()} (3D)")
    else:
        missing.append("MRAcquisitionType")

    if f.scanning:
        if "GR" in f.scanning and "EP" not in f.scanning:
            good.append(f"ScanningSequence {f.show(f.scanning)}")
        else:
            bad.append(f"ScanningSequence {f.show(f.scanning)} (not a gradient echo)")
    elif t1_name:
        good.append(f.show_sequence())
    else:
        missing.append("ScanningSequence")
    if f.sequence and not any(f.show_sequence() in g for g in good):
        good.append(f.show_sequence())

    if f.te_max is None:
        missing.append("EchoTime")
    elif f.te_max < 10:
        good.append(f"TE {f.show_te()}")
    else:
        bad.append(f"TE {f.show_te()} (not < 10 ms)")

    prepared = (
        (f.ti is not None and f.ti > 0) or "IR" in f.scanning or f.inverted or "MP" in f.variant
        or bool(_PREPARED_SEQUENCE.search(f.sequence))
    )
    if prepared:
        if f.ti is None or f.ti <= 0:
            good.append("inversion-prepared" + (f" (SequenceVariant {f.show(f.variant)})" if "MP" in f.variant else ""))
        elif 200 <= f.ti <= 1500:
            good.append(f"TI {f.ti:g} ms")
        else:
            bad.append(f"TI {f.ti:g} ms (not 200–1500 ms)")
    else:
        if f.tr is None:
            missing.append("RepetitionTime")
        elif f.tr < 30:
            good.append(f"TR {f.tr:g} ms")
        else:
            bad.append(f"TR {f.tr:g} ms without an inversion (not < 30 ms)")
        if f.flip is None:
            missing.append("FlipAngle")
        elif 5 <= f.flip <= 40:
            good.append(f"FlipAngle {f.flip:g}")
        else:
            bad.append(f"FlipAngle {f.flip:g} (not 5–40° for a spoiled gradient echo)")

    if f.thickness is not None and f.thickness > 3:
        bad.append(f"SliceThickness {f.thickness:g} mm (> 3 mm)")

    if bad:
        return "other", _why("other", *bad, *good)
    if missing:
        seen = good + ([f.show_description()] if f.description else [])
        return "unknown", f"unknown: no {', '.join(missing)}" + (f" ({', '.join(seen)})" if seen else "") + "; not known to be T1w"
    return "T1w", "T1w: " + ", ".join(good)


def _why(label: str, *evidence: str) -> str:
    return f"{label}: {', '.join(e for e in evidence if e)}; not a T1w"


class _Facts:
    """The tags the rules use, normalised: upper-case tokens, floats or None, lower-case names."""

    def __init__(self, headers: Sequence[Any]) -> None:
        first = headers[0]
        self.modality = _text(_get(first, "Modality")).upper()
        self.sop_class = _text(_get(first, "SOPClassUID"))
        self.image_types: list[list[str]] = []
        for ds in headers:
            tokens = _tokens(_get(ds, "ImageType"))
            if tokens not in self.image_types:
                self.image_types.append(tokens)
        self.image_type = [t for tokens in self.image_types for t in tokens]
        self.raw_description = " ".join(dict.fromkeys(v for v in (_text(_get(first, "SeriesDescription")), _text(_get(first, "ProtocolName"))) if v))
        self.description = self.raw_description.lower()
        self.raw_sequence = _text(_get(first, "SequenceName"))
        self.sequence = self.raw_sequence.lstrip("*").lower()
        self.scanning = _tokens(_get(first, "ScanningSequence"))
        self.variant = _tokens(_get(first, "SequenceVariant"))
        self.options = _tokens(_get(first, "ScanOptions"))
        self.inverted = any(o == "IR" or o.startswith("IR_") for o in self.options)
        self.acquisition = _text(_get(first, "MRAcquisitionType")).upper()
        self.tr = _number(_get(first, "RepetitionTime"))
        self.ti = _number(_get(first, "InversionTime"))
        self.flip = _number(_get(first, "FlipAngle"))
        self.thickness = _number(_get(first, "SliceThickness"))
        self.b_value = _number(_get(first, "DiffusionBValue")) or 0.0
        times = {_number(_get(ds, "EchoTime")) for ds in headers}
        self.echo_times = sorted(t for t in times if t is not None)
        self.te_max = self.echo_times[-1] if self.echo_times else None

    @staticmethod
    def show(tokens: list[str]) -> str:
        return "\\".join(tokens)

    def show_image_type(self) -> str:
        return "ImageType " + " | ".join("\\".join(tokens) for tokens in self.image_types)

    def show_description(self) -> str:
        return f"SeriesDescription '{self.raw_description}'"

    def show_sequence(self) -> str:
        return f"SequenceName {self.raw_sequence}"

    def show_te(self) -> str:
        return "/".join(f"{t:g}" for t in self.echo_times) + " ms"


def _get(ds: Any, keyword: str) -> Any:
    try:
        return ds.get(keyword)
    except Exception:  # a malformed value that pydicom cannot convert: treat as absent
        return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str) and _is_multi(value):
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _is_multi(value: Any) -> bool:
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    items = value.split("\\") if isinstance(value, str) else list(value) if _is_multi(value) else [value]
    return [str(v).strip().upper() for v in items if str(v).strip()]


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if _is_multi(value):
        if not len(value):
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
