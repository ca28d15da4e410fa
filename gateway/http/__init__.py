"""HTTP plumbing shared by every route: problem details, request ids."""
