"""Imaging manifests: DICOM Key Object Selection (XDS-I.b / MADO) ⇄ FHIR ImagingStudy, pure."""
