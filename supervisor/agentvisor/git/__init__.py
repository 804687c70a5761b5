"""The host's git, hardened: the agents' repositories and branches, the git channel's
HTTP side, merging, and the files a project may set on its start branch."""
