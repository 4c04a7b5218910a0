"""What a document's registration implies (IHE MHD / XDS-I.b), run when the unit of work ends:
a replacement (`relatesTo.code = replaces`) makes the replaced DocumentReference `superseded`;
an imaging manifest (DICOM KOS, PS3.3 A.35.4) creates or updates its study's ImagingStudy,
links the DocumentReference to it, and supersedes the study's previous manifest."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from app.errors import Invalid, Issue
from app.storage.repository import Stored

if TYPE_CHECKING:
    from app.services.resources import ResourceService

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
DICOM_UID_SYSTEM = "urn:dicom:uid"


class Documents:
    """Collects the DocumentReferences a unit of work writes; `finish` applies what they imply."""

    def __init__(self, service: ResourceService) -> None:
        self.svc = service
        self.written: list[Stored] = []

    def on_write(self, stored: Stored) -> None:
        """Repository listener: remember current DocumentReferences as they are written."""
        if stored.type != "DocumentReference" or stored.deleted:
            return
        if stored.resource.get("status") == "current":
            self.written.append(stored)

    def finish(self) -> None:
        """Apply replacements and manifests of everything written (new writes included)."""
        while self.written:
            stored = self.written.pop(0)
            current = self.svc.repo.current(stored.type, stored.id)
            if current is None or current.version != stored.version:
                continue  # rewritten later in this unit: that version is handled instead
            self._replacements(current)

    def _replacements(self, stored: Stored) -> None:
        for relation in stored.resource.get("relatesTo", []) or []:
            if not isinstance(relation, dict) or relation.get("code") != "replaces":
                continue
            ref = (relation.get("target") or {}).get("reference", "")
            if not isinstance(ref, str) or not ref.startswith("DocumentReference/"):
                continue
            self.supersede(ref.split("/", 1)[1], by=stored)

    def supersede(self, document_id: str, *, by: Stored) -> None:
        """Mark a DocumentReference superseded (through the policy: only its site may)."""
        if document_id == by.id:
            return
        old = self.svc.repo.current("DocumentReference", document_id)
        if old is None or old.deleted:
            raise Invalid(
                f"DocumentReference/{by.id} replaces DocumentReference/{document_id}, which is "
                "not known",
                issues=[Issue("not-found", "relatesTo.target is not known")],
            )
        if old.resource.get("status") == "superseded":
            return
        resource = dict(old.resource)
        resource["status"] = "superseded"
        self.svc.update("DocumentReference", document_id, resource)


def attachment_bytes(svc: ResourceService, attachment: dict[str, Any]) -> bytes | None:
    """A stored document's content: inline data, or the Binary its url names."""
    encoded = attachment.get("data")
    if encoded is None:
        url = attachment.get("url")
        if not isinstance(url, str) or "Binary/" not in url:
            return None
        binary = svc.repo.current("Binary", url.rsplit("Binary/", 1)[1].split("/")[0])
        if binary is None or binary.deleted:
            return None
        encoded = binary.resource.get("data")
    try:
        return base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (binascii.Error, ValueError):
        return None
