"""Identity vigilance: one person's records across sites (PIXm), never two people confused."""
