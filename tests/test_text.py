from visprune.prompt import extract_question


def test_extract_question_from_common_templates():
    assert extract_question("USER:  \nWhat colour is the star? ASSISTANT:") == "What colour is the star?"
    assert extract_question("[INST]  \nIs there a dog? [/INST]") == "Is there a dog?"
    assert extract_question("system\nYou are helpful.\nuser\n\nHow many cats?\nassistant\n") == "How many cats?"
    assert extract_question("  plain question  ") == "plain question"
    assert extract_question("USER : how many circle ? ASSISTANT :") == "how many circle ?"
