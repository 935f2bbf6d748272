"""Everything that knows about Meta's WhatsApp Cloud API, and nothing else does."""
