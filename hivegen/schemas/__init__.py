"""The JSON Schemas of the `--json` documents, one file a kind (hivegen.jsondoc)."""
