"""The libvirt CA's service on the request channel (CSRs, CRLs, revocation)."""
