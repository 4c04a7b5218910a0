"""The audit trail: BALP AuditEvents (IHE RESTful ATNA), hash-chained, retained, exportable."""
