"""What a document's registration implies (IHE MHD / XDS-I.b), run when the unit of work ends:
the Binary holding its content gets the DocumentReference as `securityContext` (whoever may see
the document may read its bytes, ITI-68); a replacement (`relatesTo.code = replaces`) makes the
replaced DocumentReference `superseded`; an imaging manifest (DICOM KOS, PS3.3 A.35.4) creates or
updates its study's ImagingStudy, links the DocumentReference to it, and supersedes the study's
previous manifest."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from app.errors import Invalid, Issue, Unprocessable
from app.fhir.naming import ENDPOINT_ID_SYSTEM
from app.fhir.search import escape
from app.imaging.kos import imaging_study, parse_kos
from app.policy.seam import local_reference
from app.storage.repository import Stored

if TYPE_CHECKING:
    from app.services.resources import ResourceService

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
DICOM_UID_SYSTEM = "urn:dicom:uid"
RIX_ENDPOINT_ID = "rix-dicomweb"  # in ENDPOINT_ID_SYSTEM, beside the sites' "<site>-<n>"


class Documents:
    """Collects the DocumentReferences a unit of work writes; `finish` applies what they imply."""

    def __init__(self, service: ResourceService) -> None:
        self.svc = service
        self.written: list[Stored] = []
        self._done: set[str] = set()

    def on_write(self, stored: Stored) -> None:
        """Repository listener: remember DocumentReferences as they are written."""
        if stored.type == "DocumentReference" and not stored.deleted:
            self.written.append(stored)

    def finish(self) -> None:
        """Bind contents, apply replacements and manifests of everything written (new writes
        included); replacements and manifests only for `current` documents."""
        while self.written:
            stored = self.written.pop(0)
            current = self.svc.repo.current(stored.type, stored.id)
            if current is None or current.version != stored.version:
                continue  # rewritten later in this unit: that version is handled instead
            if current.id in self._done:
                continue  # our own follow-up write (the link to its study, a supersession)
            self._done.add(current.id)
            self._bind_contents(current)
            if current.resource.get("status") != "current":
                continue
            self._unique(current)
            self._replacements(current)
            self._manifest(current)

    def _bind_contents(self, stored: Stored) -> None:
        """Each Binary of this server that the document's attachments name is read with the
        document's access rights: its `securityContext` becomes the DocumentReference (FHIR
        binary.html), written as a follow-up in the same transaction. A Binary whose context
        already names a live resource of this server keeps it: the first DocumentReference to
        name a Binary (or the context its writer set) wins, so a second document naming the
        same bytes cannot widen or move who may read them; a context naming nothing live (a
        deleted document) is replaced."""
        own = f"DocumentReference/{stored.id}"
        base = self.svc.repo.compiler.base_url
        for content in stored.resource.get("content", []) or []:
            attachment = content.get("attachment") if isinstance(content, dict) else None
            url = attachment.get("url") if isinstance(attachment, dict) else None
            if isinstance(url, str) and base and url.startswith(f"{base}/"):
                url = url[len(base) + 1 :]  # our own absolute URL is the same reference
            target = local_reference(url)
            if target is None or target[0] != "Binary":
                continue
            binary = self.svc.repo.current("Binary", target[1])
            if binary is None or binary.deleted:
                continue  # the content is elsewhere, or not (yet) here: nothing to protect
            context = (binary.resource.get("securityContext") or {}).get("reference")
            if context == own or (context is not None and self._live(context)):
                continue
            resource = {**binary.resource, "securityContext": {"reference": own}}
            self.svc.update("Binary", binary.id, resource)

    def _live(self, reference: Any) -> bool:
        target = local_reference(reference)
        if target is None or target[0] not in self.svc.registry:
            return False
        found = self.svc.repo.current(*target)
        return found is not None and not found.deleted

    def _unique(self, stored: Stored) -> None:
        """A document's uniqueId (masterIdentifier) names one document (XDS: a second
        registration is XDSDuplicateUniqueIdInRegistry); a replacement carries a new one."""
        master = stored.resource.get("masterIdentifier") or {}
        value = master.get("value")
        if not value:
            return
        query = self.svc.parser.parse("DocumentReference", [("identifier", escape(value))])
        for other in self.svc.repo.search(query)[0]:
            theirs = other.resource.get("masterIdentifier") or {}
            if other.id != stored.id and theirs.get("value") == value:
                raise Unprocessable(
                    f"DocumentReference.masterIdentifier {value} is already registered "
                    f"(DocumentReference/{other.id}); a new document or a replacement needs a "
                    "new uniqueId",
                    issues=[
                        Issue(
                            "duplicate",
                            "XDSDuplicateUniqueIdInRegistry",
                            expression=["DocumentReference.masterIdentifier"],
                        )
                    ],
                )

    def _replacements(self, stored: Stored) -> None:
        for relation in stored.resource.get("relatesTo", []) or []:
            if not isinstance(relation, dict) or relation.get("code") != "replaces":
                continue
            ref = str((relation.get("target") or {}).get("reference", ""))
            base = self.svc.repo.compiler.base_url
            if base and ref.startswith(f"{base}/"):  # our own absolute URL is the same reference
                ref = ref[len(base) + 1 :]
            if not ref.startswith("DocumentReference/"):
                raise Invalid(
                    f"relatesTo.target '{ref}' is not a DocumentReference of this server",
                    issues=[Issue("value", "bad relatesTo.target", expression=["relatesTo"])],
                )
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
        if old.resource.get("subject") != by.resource.get("subject"):
            raise Unprocessable(
                f"DocumentReference/{by.id} would replace DocumentReference/{document_id}, a "
                "document about another patient (XDSPatientIdDoesNotMatch)",
                issues=[Issue("business-rule", "XDSPatientIdDoesNotMatch")],
            )
        if old.resource.get("status") == "superseded":
            return
        resource = dict(old.resource)
        resource["status"] = "superseded"
        self.svc.update("DocumentReference", document_id, resource)

    # -- imaging manifests (XDS-I.b) -----------------------------------------------------------

    def _manifest(self, stored: Stored) -> None:
        """A KOS manifest registers (or updates) its study; the study's earlier manifests are
        superseded, so a study is never listed twice."""
        document = stored.resource
        data = next(
            (
                attachment_bytes(self.svc, c["attachment"])
                for c in document.get("content", []) or []
                if isinstance(c, dict) and _is_kos(c)
            ),
            None,
        )
        if data is None:
            return
        manifest = parse_kos(data)
        subject = (document.get("subject") or {}).get("reference")
        if not isinstance(subject, str) or not subject.startswith("Patient/"):
            raise Invalid(
                "An imaging manifest's DocumentReference must name its Patient (subject)",
                issues=[Issue("required", "subject", expression=["DocumentReference.subject"])],
            )
        uid = f"urn:oid:{manifest.study_uid}"
        study = imaging_study(
            manifest,
            patient_reference=subject,
            endpoint_reference=f"Endpoint/{self.rix_endpoint()}",
            started_fallback=document.get("date"),
        )
        criteria = [("identifier", f"{DICOM_UID_SYSTEM}|{uid}")]
        found = self.svc.repo.search(self.svc.parser.parse("ImagingStudy", criteria))[0]
        if found and found[0].resource.get("subject") != study["subject"]:
            raise Unprocessable(
                f"Study {manifest.study_uid} is registered for another patient "
                f"(ImagingStudy/{found[0].id}); a manifest cannot move it",
                issues=[Issue("business-rule", "XDSPatientIdDoesNotMatch")],
            )
        if found:  # keep what the manifest does not carry (orders, notes, site extensions)
            study = {**found[0].resource, **study, "id": found[0].id}
            study_id = self.svc.update("ImagingStudy", found[0].id, study).stored.id
        else:
            study_id = self.svc.create("ImagingStudy", study).stored.id
        self._link(stored, study_id, uid, manifest.accession_number)
        others = self.svc.repo.search(
            self.svc.parser.parse(
                "DocumentReference",
                [("study-instance-uid", f"{DICOM_UID_SYSTEM}|{uid}"), ("status", "current")],
            )
        )[0]
        for other in others:
            if other.id != stored.id and any(
                _is_kos(c) for c in other.resource.get("content", []) if isinstance(c, dict)
            ):
                self.supersede(other.id, by=stored)

    def _link(self, stored: Stored, study_id: str, uid: str, accession: str | None) -> None:
        """The manifest's DocumentReference points at its study (`context.related`), by
        reference and by Study Instance UID, so reports and priors find each other."""
        document = stored.resource
        context = dict(document.get("context") or {})
        related = list(context.get("related") or [])
        wanted: list[dict[str, Any]] = [{"reference": f"ImagingStudy/{study_id}"}]
        if not any(r.get("identifier", {}).get("value") == uid for r in related):
            wanted.append(
                {"type": "ImagingStudy", "identifier": {"system": DICOM_UID_SYSTEM, "value": uid}}
            )
        if accession and not any(
            r.get("identifier", {}).get("value") == accession for r in related
        ):
            wanted.append({"type": "ServiceRequest", "identifier": _accession(accession)})
        missing = [w for w in wanted if w not in related]
        if not missing:
            return
        context["related"] = related + missing
        self.svc.update("DocumentReference", stored.id, {**document, "context": context})

    def rix_endpoint(self) -> str:
        """RIX's own DICOMweb (WADO-RS) Endpoint, created on first use: studies point at it,
        never at a site's internal PACS."""
        found = self.svc.repo.by_identifier("Endpoint", ENDPOINT_ID_SYSTEM, RIX_ENDPOINT_ID)
        if found:
            return found[0].id
        fhir_base = self.svc.repo.compiler.base_url or "http://localhost:8080/fhir"
        address = fhir_base.rsplit("/fhir", 1)[0] + "/dicom-web"
        endpoint = {
            "resourceType": "Endpoint",
            "identifier": [{"system": ENDPOINT_ID_SYSTEM, "value": RIX_ENDPOINT_ID}],
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "name": "RIX DICOMweb (WADO-RS)",
            "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"],
            "address": address,
        }
        return self.svc.repo.create(endpoint).id


def is_manifest(document: dict[str, Any]) -> bool:
    """True for an imaging manifest's DocumentReference (a KOS, or a MADO FHIR manifest)."""
    for content in document.get("content", []) or []:
        if not isinstance(content, dict):
            continue
        code = str((content.get("format") or {}).get("code") or "")
        if _is_kos(content) or code.startswith("urn:ihe:rad:MADO"):
            return True
    return False


def _is_kos(content: dict[str, Any]) -> bool:
    attachment = content.get("attachment") or {}
    if str(attachment.get("contentType", "")).split(";")[0].strip() != "application/dicom":
        return False
    code = (content.get("format") or {}).get("code")
    return code in (None, KOS_SOP_CLASS, f"urn:oid:{KOS_SOP_CLASS}")


def _accession(value: str) -> dict[str, Any]:
    return {
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
        },
        "value": value,
    }


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
