"""Dumb byte stores behind one small interface (see :mod:`strongroom.store.base`)."""

from strongroom.store.base import ObjectStore, StoreCapabilities, open_store, register_store

__all__ = ["ObjectStore", "StoreCapabilities", "open_store", "register_store"]
