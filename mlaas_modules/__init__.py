"""Loadable MLaaS policy modules."""
