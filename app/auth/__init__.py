"""Authentication: bearer JWT verification (IHE IUA ITI-72) and the development token issuer."""
