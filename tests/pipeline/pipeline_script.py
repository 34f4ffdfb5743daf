"""What the scripted bundle of the pipeline tests says: shared by conftest and the tests
under a name no other test folder uses (``from conftest import`` would pick whichever
folder's conftest was imported first)."""

TRANSCRIPT = "What time does the store open?"
REPLY = "We open at nine, and close at eight. Anything else?"
