"""Test fixtures shared by the test tiers: tiny model files written on the fly, never downloaded."""
