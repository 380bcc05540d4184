from langchain_persona_judge.cli import main

main()
