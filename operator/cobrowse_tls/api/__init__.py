"""Layer 1: the pydantic models of the CobrowseTLS resource and the CRD generated from them."""
