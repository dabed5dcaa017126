#ifndef GREET_H
#define GREET_H
#ifdef __cplusplus
extern "C" {
#endif
void greet(const char *who);
int count_words(const char *text);
#ifdef __cplusplus
}
#endif
#endif
