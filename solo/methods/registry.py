"""The method registry: ``METHODS.get(name)`` returns the method's class."""

from solo.utils.registry import Registry

METHODS: Registry[type] = Registry("method")
