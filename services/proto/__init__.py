"""The gRPC API of hwcompress: ``hwcompress.v1`` (.proto files and their committed stubs)."""
