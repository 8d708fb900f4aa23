"""The OCI image-spec JSON schemas, packaged as data (see NOTICE); loaded by layouttool.schema."""
