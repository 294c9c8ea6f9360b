from trainer.register import main

main()
