"""Wire protocols of the gateway, one module per protocol."""
