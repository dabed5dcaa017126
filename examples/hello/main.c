#include <stdio.h>
#include "greet.h"

int main(void) {
    greet("llama");
    printf("%d words\n", count_words("compiled through llamacc"));
    return 0;
}
