from agentvisor.cli import main

main()
