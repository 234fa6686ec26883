"""The catalog: products, sessions and showcases; its pure rules, service, store and REST
routes."""
