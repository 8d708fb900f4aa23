"""Readers (and writers) of foreign containers: docker save tarballs, OCI archives."""
