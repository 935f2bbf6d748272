"""Pure rules of the helpdesk: no I/O, no database, plain values in and out."""
