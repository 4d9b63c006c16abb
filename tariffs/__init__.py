"""The circle's registry and tariffs: who runs what, and what a ride costs (SPEC §2, §6)."""
