"""The site registry: the region's sites as Organizations with their PACS Endpoints."""
