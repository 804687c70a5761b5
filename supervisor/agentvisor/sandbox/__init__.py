"""The container sandboxes: the Docker spec and policy, the backend that starts and
stops them, their sockets, tokens and user, and the images they run."""
