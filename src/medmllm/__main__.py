from medmllm.cli import main

main()
