"""Chat and moderation: the pure rules (`rules`), the service, the review queue, the
cluster's shared limits, reply tracking, the store and the REST routes."""
