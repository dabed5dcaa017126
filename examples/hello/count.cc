#include <sstream>
#include <string>
#include "greet.h"

extern "C" int count_words(const char *text) {
    std::istringstream in(text);
    std::string word;
    int n = 0;
    while (in >> word) ++n;
    return n;
}
