"""The Faust app: the embed and index agents, dead letters, replay (the ingestion issue)."""
