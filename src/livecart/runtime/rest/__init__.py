"""REST plumbing shared by the feature routes: errors and identity (`common`), the request
guard, and the system routes."""
