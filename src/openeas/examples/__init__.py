"""Example services that ship with openeas."""
